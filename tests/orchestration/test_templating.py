import pytest

from orchestration.steps import templating


def test_single_expression_keeps_native_type():
    assert templating.render("{{ steps.a.output.n }}", {"steps": {"a": {"output": {"n": 3}}}}) == 3


def test_mixed_text_renders_string_and_walks_structures():
    value = {"x": ["Hi {{ inputs.who }}", 1]}
    assert templating.render(value, {"inputs": {"who": "Ada"}}) == {"x": ["Hi Ada", 1]}


def test_sandbox_blocks_attribute_escape():
    with pytest.raises(templating.TemplateError):
        templating.render("{{ inputs.__class__.__mro__ }}", {"inputs": {}})


def test_undefined_is_an_error_not_empty():
    with pytest.raises(templating.TemplateError):
        templating.render("{{ inputs.missing }}", {"inputs": {}})


def test_truthy_accepts_bare_expressions():
    assert templating.truthy("inputs.n > 2", {"inputs": {"n": 3}})
    assert not templating.truthy("{{ inputs.n > 5 }}", {"inputs": {"n": 3}})
