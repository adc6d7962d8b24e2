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


def test_references_include_variables():
    found = templating.template_references(
        "{{ vars.a }} {{ vars['b'] }} {{ inputs.x }} {{ steps.s.output }}"
    )
    assert found.variables == {"a", "b"} and found.inputs == {"x"} and found.steps == {"s"}
    assert not found.whole_vars
    assert templating.template_references("{{ vars }}").whole_vars
    assert templating.template_references("{{ vars[inputs.k] }}").whole_vars
    assert templating.references("{{ vars.a }} {{ inputs.x }}") == (set(), {"x"})


def test_unknown_root_names_list_vars():
    with pytest.raises(templating.TemplateError, match="inputs, steps, vars, run and workflow"):
        templating.template_references("{{ env.HOME }}")


def test_variables_render_by_name_and_keep_their_type():
    variables = templating.Variables({"n": 3, "conf": {"k": [1, 2]}, "s": "x"})
    context = {"vars": variables}
    assert templating.render("{{ vars.n }}", context) == 3
    assert templating.render("{{ vars['conf'].k[1] }}", context) == 2
    assert templating.render("{{ vars.s }}-{{ vars.n }}", context) == "x-3"
    assert templating.truthy("vars.n > 2", context)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ vars.missing }}", "unknown variable 'missing'"),
        ("{% for v in vars %}{% endfor %}", "cannot be listed"),
        ("{{ vars.__class__ }}", "unsafe"),
        ("{{ vars._Variables__values }}", "unsafe"),
    ],
)
def test_variables_cannot_be_listed_or_escaped(template, message):
    variables = templating.Variables({"s": "secret-value"}, secret={"s"})
    with pytest.raises(templating.TemplateError, match=message):
        templating.render(template, {"vars": variables})
    assert "secret-value" not in repr(variables) and "secret-value" not in str(variables)


def test_redact_replaces_every_form_of_a_secret():
    variables = templating.Variables(
        {"tok": "s3cr3t'tok\n", "conf": {"password": "hunter22", "port": 5432}, "pub": "public"},
        secret={"tok", "conf"},
    )
    text = f"a s3cr3t'tok\n b {'s3cr3t' + chr(39) + 'tok' + chr(10)!r} c hunter22 d "
    text += '{"password": "hunter22"} public'

    redacted = templating.redact(text, variables)
    assert "s3cr3t" not in redacted and "hunter22" not in redacted
    assert '"password"' in redacted
    assert redacted.endswith("public")
    assert templating.redact("cut inside: hunter2", variables) == "cut inside: ***"
    assert templating.redact("nothing secret", templating.Variables({"a": "nothing"})) == (
        "nothing secret"
    )


def test_constant_truth():
    assert templating.constant_truth("{{ false }}") is False
    assert templating.constant_truth("1 > 2") is False
    assert templating.constant_truth("{{ true and 1 }}") is True
    assert templating.constant_truth("{{ inputs.x }}") is None
    assert templating.constant_truth("{{ 'x' * 10 }}") is None
