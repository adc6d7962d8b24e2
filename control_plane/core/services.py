"""Small helpers shared by the apps' services."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from django.db import models

M = TypeVar("M", bound=models.Model)


def model_update(
    instance: M, data: dict[str, Any], *, fields: Iterable[str], exclude: Iterable[str] = ()
) -> M:
    """Set `data` on `instance` (only `fields` may be changed), validate the model, and save
    just those columns."""
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{type(instance).__name__}: not editable here: {sorted(unknown)}")
    for field, value in data.items():
        setattr(instance, field, value)
    instance.full_clean(exclude=list(exclude))
    instance.save(update_fields=list(data) or None)
    return instance
