"""Jinja2 templates inside step configs and `when` conditions, always in the sandbox."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


ROOTS = frozenset({"steps", "inputs", "vars", "run", "workflow"})


@dataclass(frozen=True)
class References:
    """What one template refers to. `whole_vars` is set when `vars` is used other than as
    `vars.name` / `vars['name']` (printed whole, iterated, indexed by a computed key): that
    could expose every variable, secrets included, so validation refuses it."""

    steps: frozenset[str]
    inputs: frozenset[str]
    variables: frozenset[str]
    whole_vars: bool = False


@lru_cache(maxsize=4096)
def _parse(text: str) -> nodes.Template:
    try:
        return environment().parse(text)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message} (line {exc.lineno})") from exc


def _as_template(text: str) -> str:
    return text if is_template(text) else "{{ " + text + " }}"


def template_references(text: str) -> References:
    """The steps, inputs and variables a template refers to. Raises TemplateError on a syntax
    error or a name that is not one of the template roots."""
    ast = _parse(_as_template(text))
    found: dict[str, set[str]] = {"steps": set(), "inputs": set(), "vars": set()}
    named_vars: set[int] = set()  # the `vars` Name nodes used as vars.<name> / vars['name']
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if isinstance(target, nodes.Name) and target.name in found:
            if isinstance(node, nodes.Getattr):
                key = node.attr
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                key = node.arg.value
            else:
                continue
            found[target.name].add(key)
            if target.name == "vars":
                named_vars.add(id(target))
    whole_vars = any(n.name == "vars" and id(n) not in named_vars for n in ast.find_all(nodes.Name))
    unknown_roots = meta.find_undeclared_variables(ast) - ROOTS
    if unknown_roots:
        names = ", ".join(sorted(unknown_roots))
        raise TemplateError(
            f"unknown name(s) {names}: templates may use inputs, steps, vars, run and workflow"
        )
    return References(
        steps=frozenset(found["steps"]),
        inputs=frozenset(found["inputs"]),
        variables=frozenset(found["vars"]),
        whole_vars=whole_vars,
    )


def references(text: str) -> tuple[set[str], set[str]]:
    """The step ids and input names a template refers to (`steps.X...`, `inputs.Y...`).

    Raises TemplateError on a syntax error."""
    found = template_references(text)
    return set(found.steps), set(found.inputs)


def mentions_variables(text: str) -> bool:
    """Whether a template reads `vars` at all: ops fetch a run's variables only then."""
    try:
        ast = _parse(_as_template(text))
    except TemplateError:
        return False
    return "vars" in meta.find_undeclared_variables(ast)


# Nodes a condition may consist of and still be evaluated at validation time: literals,
# logic, comparisons and arithmetic that cannot blow up (no `*`, `**`, `%`, filters, calls or
# names), so evaluating an editor's template in the web process costs nothing.
_CONSTANT_NODES = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.If,
    nodes.CondExpr,
    nodes.Const,
    nodes.List,
    nodes.Tuple,
    nodes.Dict,
    nodes.Pair,
    nodes.Not,
    nodes.And,
    nodes.Or,
    nodes.Neg,
    nodes.Pos,
    nodes.Compare,
    nodes.Operand,
    nodes.Concat,
    nodes.Add,
    nodes.Sub,
    nodes.Div,
    nodes.FloorDiv,
)


def constant_truth(condition: str) -> bool | None:
    """The truth of a `when` condition that refers to nothing (`"{{ false }}"`, `"1 > 2"`), or
    None when it depends on the run or cannot be judged safely before it runs."""
    try:
        ast = _parse(_as_template(condition))
    except TemplateError:
        return None
    if not all(isinstance(node, _CONSTANT_NODES) for node in ast.find_all(nodes.Node)):
        return None
    try:
        return truthy(condition, {})
    except TemplateError:
        return None


class UnknownVariable(Exception):
    """Not a LookupError on purpose: Jinja would turn that into a vague undefined error."""


class Variables:
    """A run's `vars`: read by name only (`vars.x`, `vars['x']`), never listed or printed
    whole, so no template can dump every secret at once. It knows which values are secret so
    that error messages and logs can be redacted before they reach Dagster.

    Its own state lives in name-mangled slots and it has no public attributes: Jinja's
    attribute lookup falls through to `__getitem__` for every variable name."""

    __slots__ = ("__values", "__secret")

    def __init__(self, values: Mapping[str, Any] | None = None, secret: Iterable[str] = ()):
        self.__values = dict(values or {})
        self.__secret = frozenset(secret) & self.__values.keys()

    def __getitem__(self, name: str) -> Any:
        if isinstance(name, str) and name in self.__values:
            return self.__values[name]
        raise UnknownVariable(
            f"unknown variable '{name}': define it for this workflow or its organization"
        )

    def __contains__(self, name: object) -> bool:
        return name in self.__values

    def __iter__(self):
        raise TypeError("vars cannot be listed: use vars.<name>")

    def __repr__(self) -> str:
        return "<vars>"

    __str__ = __repr__


def variable_names(variables: Variables) -> frozenset[str]:
    return frozenset(variables._Variables__values)


def with_secrets(variables: Variables, extra: Mapping[str, Any]) -> Variables:
    """`variables` plus more secret values (a connector's credentials), for redaction only:
    never a template's `vars` (the extra names start with NUL, which no template can write)."""
    values = {**variables._Variables__values, **{f"\0{k}": v for k, v in extra.items()}}
    secret = variables._Variables__secret | {f"\0{k}" for k in extra}
    return Variables(values, secret=secret)


def secret_texts(variables: Variables) -> tuple[str, ...]:
    """Every text form a secret value could take in a message, longest first. Forms shorter
    than 4 characters, and booleans and nulls, are left alone: replacing them would garble
    every message."""
    texts: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, str):
            texts.update({value, repr(value)[1:-1], json.dumps(value)[1:-1]})
        elif isinstance(value, dict):
            for item in value.values():  # keys are the shape, not the secret
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)
        if not isinstance(value, str | bool) and value is not None:
            texts.update({str(value), json.dumps(value), json.dumps(value, ensure_ascii=False)})

    values = variables._Variables__values
    for name in variables._Variables__secret:
        collect(values[name])
    return tuple(sorted((t for t in texts if len(t) >= 4), key=len, reverse=True))


def redact(text: str, variables: Variables) -> str:
    """`text` with every secret variable's value replaced by `***`, including the start of one
    where the text ends: messages are often cut to a length, possibly inside a secret."""
    secrets = secret_texts(variables)
    for secret in secrets:
        text = text.replace(secret, "***")
    for secret in secrets:
        for length in range(len(secret) - 1, 3, -1):
            if text.endswith(secret[:length]):
                return text[:-length] + "***"
    return text


def template_strings(value: Any, path: str = "") -> list[tuple[str, str]]:
    """(path, text) for every template string inside a config value."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in template_strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in template_strings(v, f"{path}[{i}]")]
    return [(path, value)] if is_template(value) else []
