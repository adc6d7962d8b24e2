"""Jinja2 templates inside step configs and `when` conditions, always in the sandbox."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)


class TemplateError(Exception):
    pass


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _single_expression(text: str) -> str | None:
    match = _SINGLE_EXPRESSION.match(text)
    if match and "}}" not in match.group("expr") and "{{" not in match.group("expr"):
        return match.group("expr")
    return None


@lru_cache(maxsize=4096)
def _compile_template(text: str):
    return environment().from_string(text)


@lru_cache(maxsize=4096)
def _compile_expression(expr: str):
    return environment().compile_expression(expr, undefined_to_none=False)


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render every template string inside `value` (dicts and lists walked recursively).

    A string that is exactly one `{{ expression }}` keeps the expression's native type, so
    `"{{ steps.fetch.output.status }}"` yields the integer, not its text.
    """
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    if not is_template(value):
        return value
    try:
        expr = _single_expression(value)
        if expr is not None:
            result = _compile_expression(expr)(**context)
            if isinstance(result, Undefined):
                result._fail_with_undefined_error()  # StrictUndefined: raises with the name
            return result
        return _compile_template(value).render(**context)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}") from exc
    except Exception as exc:  # undefined names, sandbox violations, type errors in expressions
        raise TemplateError(f"{type(exc).__name__}: {exc}") from exc


def truthy(condition: str, context: dict[str, Any]) -> bool:
    """Evaluate a `when` condition; a bare expression without braces is accepted too."""
    text = condition if is_template(condition) else "{{ " + condition + " }}"
    return bool(render(text, context))


def references(text: str) -> tuple[set[str], set[str]]:
    """The step ids and input names a template refers to (`steps.X...`, `inputs.Y...`).

    Raises TemplateError on a syntax error."""
    if not is_template(text):
        text = "{{ " + text + " }}"
    try:
        ast = environment().parse(text)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message} (line {exc.lineno})") from exc
    steps: set[str] = set()
    inputs: set[str] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if isinstance(target, nodes.Name) and target.name in ("steps", "inputs"):
            if isinstance(node, nodes.Getattr):
                key = node.attr
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                key = node.arg.value
            else:
                continue
            (steps if target.name == "steps" else inputs).add(key)
    unknown_roots = meta.find_undeclared_variables(ast) - {"steps", "inputs", "run", "workflow"}
    if unknown_roots:
        names = ", ".join(sorted(unknown_roots))
        raise TemplateError(
            f"unknown name(s) {names}: templates may use inputs, steps, run and workflow"
        )
    return steps, inputs


def template_strings(value: Any, path: str = "") -> list[tuple[str, str]]:
    """(path, text) for every template string inside a config value."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in template_strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in template_strings(v, f"{path}[{i}]")]
    return [(path, value)] if is_template(value) else []
