"""The definition validator: every error class names its path and step."""

from __future__ import annotations

import pytest

from orchestration.steps import definition as d
from tests.factories import definition


def errors_of(raw) -> list[d.DefinitionError]:
    return d.validate(raw)


def test_valid_definition_has_no_errors():
    assert errors_of(definition()) == []


def test_not_an_object():
    [error] = errors_of(["steps"])
    assert error.path == "definition"


def test_unknown_step_type_names_step_and_field():
    raw = definition(steps=[{"id": "classify", "type": "ai.nope", "config": {}}])
    [error] = errors_of(raw)
    assert (error.path, error.step) == ("steps[0].type", "classify")
    assert "unknown step type 'ai.nope'" in error.message


def test_duplicate_step_id():
    steps = definition()["steps"]
    steps[2]["id"] = "greet"
    errors = errors_of(definition(steps=steps))
    assert any(
        e.path == "steps[2].id" and e.step == "greet" and "duplicate" in e.message for e in errors
    )


def test_after_unknown_step():
    steps = definition()["steps"]
    steps[1]["after"] = ["missing"]
    errors = errors_of(definition(steps=steps))
    assert any(e.path == "steps[1].after[0]" and e.step == "shout" for e in errors)


def test_cycle_names_the_steps():
    steps = definition()["steps"]
    steps[0]["after"] = ["shout"]
    [error] = [e for e in errors_of(definition(steps=steps)) if "cycle" in e.message]
    assert "greet" in error.message and "shout" in error.message


def test_bad_config_field():
    raw = definition(
        steps=[
            {"id": "fetch", "type": "http.request", "config": {"url": "http://x", "method": "BREW"}}
        ]
    )
    [error] = errors_of(raw)
    assert (error.path, error.step) == ("steps[0].config.method", "fetch")


def test_unknown_config_field_is_an_error():
    raw = definition(
        steps=[{"id": "t", "type": "transform.template", "config": {"template": "x", "tmpl": 1}}]
    )
    [error] = errors_of(raw)
    assert error.path == "steps[0].config.tmpl"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ inputs.nope }}", "unknown input 'nope'"),
        ("{{ steps.ghost.output }}", "unknown step 'ghost'"),
        ("{{ steps.length.output }}", "not upstream"),
        ("{{ unclosed", "syntax error"),
        ("{{ os.system('x') }}", "unknown name"),
    ],
)
def test_template_references(template, message):
    steps = definition()["steps"]
    steps[1]["config"]["template"] = template
    errors = errors_of(definition(steps=steps))
    assert any(
        e.step == "shout" and e.path == "steps[1].config.template" and message in e.message
        for e in errors
    ), errors


def test_when_condition_references_are_checked():
    steps = definition()["steps"]
    steps[1]["when"] = "steps.ghost.output.ok"
    errors = errors_of(definition(steps=steps))
    assert [(e.path, e.step) for e in errors] == [("steps[1].when", "shout")]


def test_bad_step_id_pattern():
    raw = definition(
        steps=[{"id": "Has Space", "type": "transform.template", "config": {"template": "x"}}]
    )
    assert errors_of(raw)[0].path == "steps[0].id"


def test_content_hash_is_stable_and_order_insensitive_for_keys():
    a = {"steps": [{"id": "x", "type": "t", "config": {"b": 1, "a": 2}}], "inputs": {}}
    b = {"inputs": {}, "steps": [{"config": {"a": 2, "b": 1}, "type": "t", "id": "x"}]}
    assert d.content_hash(a) == d.content_hash(b)
    assert len(d.content_hash(a)) == 64
    assert d.content_hash(a) != d.content_hash({**a, "inputs": {"q": {}}})


def test_coerce_inputs_defaults_types_and_unknowns():
    spec = d.WorkflowDefinition.model_validate(
        definition(inputs={"n": {"type": "integer"}, "name": {"type": "string", "default": "w"}})
    )
    assert d.coerce_inputs(spec, {"n": 3}) == ({"n": 3, "name": "w"}, {})
    _, errors = d.coerce_inputs(spec, {"n": "3", "zzz": 1})
    assert set(errors) == {"n", "zzz"}
    _, errors = d.coerce_inputs(spec, {"n": True})
    assert "expected integer" in errors["n"][0]
    _, errors = d.coerce_inputs(spec, {})
    assert errors == {"n": ["this input is required"]}
