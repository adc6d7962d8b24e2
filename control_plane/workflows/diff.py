"""What changed between two workflow definitions, step by step: the answer to "what does
publishing (or rolling back to) this version change?"."""

from __future__ import annotations

from typing import Any


def _by_id(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    steps = definition.get("steps") if isinstance(definition, dict) else None
    if not isinstance(steps, list):
        return {}
    return {
        step["id"]: step
        for step in steps
        if isinstance(step, dict) and isinstance(step.get("id"), str)
    }


def _mapping(definition: dict[str, Any], key: str) -> dict[str, Any]:
    value = definition.get(key) if isinstance(definition, dict) else None
    return value if isinstance(value, dict) else {}


def _changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        key: {"from": old.get(key), "to": new.get(key)}
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    }


def definition_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Steps added, removed and changed (each changed field with its old and new value, and
    whether the step moved), plus changes to inputs and outputs."""
    old_steps, new_steps = _by_id(old), _by_id(new)
    old_order, new_order = list(old_steps), list(new_steps)
    changed = []
    for step_id in new_order:
        if step_id not in old_steps:
            continue
        fields = _changes(old_steps[step_id], new_steps[step_id])
        moved = old_order.index(step_id) != new_order.index(step_id)
        if fields or moved:
            changed.append({"id": step_id, "fields": fields, "moved": moved})
    old_inputs, new_inputs = _mapping(old, "inputs"), _mapping(new, "inputs")
    old_outputs, new_outputs = _mapping(old, "outputs"), _mapping(new, "outputs")
    return {
        "steps_added": [step_id for step_id in new_order if step_id not in old_steps],
        "steps_removed": [step_id for step_id in old_order if step_id not in new_steps],
        "steps_changed": changed,
        "inputs": _changes(old_inputs, new_inputs),
        "outputs": _changes(old_outputs, new_outputs),
        "identical": old == new,
    }
