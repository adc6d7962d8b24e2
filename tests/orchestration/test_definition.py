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


# Variables -----------------------------------------------------------------------------------


def _vars_definition(template: str, when: str | None = None) -> dict:
    steps = definition()["steps"]
    steps[1]["config"]["template"] = template
    if when is not None:
        steps[2]["when"] = when
    return definition(steps=steps)


def test_vars_are_not_checked_without_a_set_of_names():
    assert errors_of(_vars_definition("{{ vars.anything }}", when="vars.flag")) == []


def test_unknown_variable_names_path_and_step():
    raw = _vars_definition("{{ vars.known }} {{ vars['missing'] }}", when="vars.flag")
    errors = d.validate(raw, variables={"known"})
    assert [(e.path, e.step, e.message) for e in errors] == [
        (
            "steps[1].config.template",
            "shout",
            "unknown variable 'missing': define it for this workflow or the organization",
        ),
        (
            "steps[2].when",
            "length",
            "unknown variable 'flag': define it for this workflow or the organization",
        ),
    ]
    assert d.validate(raw, variables={"known", "missing", "flag"}) == []


def test_nested_config_and_outputs_check_variables():
    raw = definition(
        steps=[
            {
                "id": "call",
                "type": "http.request",
                "config": {
                    "url": "http://x",
                    "headers": {"Authorization": "Bearer {{ vars.tok }}"},
                },
            }
        ],
        outputs={"region": "{{ vars.region }}"},
    )
    errors = d.validate(raw, variables=set())
    assert [(e.path, e.step) for e in errors] == [
        ("steps[0].config.headers.Authorization", "call"),
        ("outputs.region", None),
    ]


@pytest.mark.parametrize(
    "template",
    ["{{ vars }}", "{{ vars[inputs.name] }}", "{% for v in vars %}{{ v }}{% endfor %}"],
)
def test_vars_are_read_by_literal_name_only(template):
    [error] = d.validate(_vars_definition(template), variables={"name"})
    assert (error.path, error.step) == ("steps[1].config.template", "shout")
    assert "vars.<name>" in error.message


# Unreachable steps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when", ["{{ false }}", "false", "{{ 1 > 2 }}", "{{ not true }}", "{% if false %}x{% endif %}"]
)
def test_constant_false_condition_makes_the_step_and_its_dependants_unreachable(when):
    steps = definition()["steps"]
    steps[0]["when"] = when  # greet; shout and length come after it
    errors = errors_of(definition(steps=steps))
    assert [(e.path, e.step) for e in errors] == [
        ("steps[0].when", "greet"),
        ("steps[1].after", "shout"),
        ("steps[2].after", "length"),
    ]
    assert "always false" in errors[0].message and "never run" in errors[0].message
    assert "'greet'" in errors[1].message and "always false" in errors[1].message


def test_unreachability_follows_after_transitively_and_names_the_cause():
    def step(id_, **extra):
        return {"id": id_, "type": "transform.template", "config": {"template": "x"}, **extra}

    raw = {
        "steps": [
            step("a"),
            step("b", when="{{ 0 }}"),
            step("c", after=["a", "b"]),
            step("d", after=["c"]),
            step("e", after=["a"]),
        ]
    }
    errors = errors_of(raw)
    assert [(e.path, e.step) for e in errors] == [
        ("steps[1].when", "b"),
        ("steps[2].after", "c"),
        ("steps[3].after", "d"),
    ]
    assert "upstream step 'b' never runs" in errors[2].message


@pytest.mark.parametrize(
    "when",
    [
        "{{ true }}",
        "true",
        "{{ inputs.name == 'x' }}",
        "{{ vars.flag }}",
        "{{ run.id == '' }}",
        "{{ 'x' * 0 }}",  # not judged before the run: multiplication may be huge
        "{{ [] | length }}",  # filters are not evaluated at validation
        "{{ 1 / 0 }}",  # fails when it runs; not "always false"
        "x{{ false }}",  # renders "xFalse": true
    ],
)
def test_conditions_that_may_be_true_are_not_unreachable(when):
    steps = definition()["steps"]
    steps[0]["when"] = when
    assert errors_of(definition(steps=steps)) == []
