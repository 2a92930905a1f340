"""Argument checks shared by losses, heads and methods: each error names the argument and what to pass."""

from __future__ import annotations

import json
import math
from typing import Any


def check_positive(name: str, value: float, owner: str) -> None:
    """Raise if ``value`` is not a finite number above zero."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{owner}: {name} must be a finite number > 0, got {value!r}.")


def check_non_negative(name: str, value: float, owner: str) -> None:
    """Raise if ``value`` is not a finite number at or above zero."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value!r}.")


def check_probability(name: str, value: float, owner: str) -> None:
    """Raise if ``value`` is not in [0, 1] (probabilities, momenta)."""
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ValueError(f"{owner}: {name} must be in [0, 1], got {value!r}.")


def check_positive_int(name: str, value: int, owner: str, minimum: int = 1) -> None:
    """Raise if ``value`` is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}.")


def check_one_of(name: str, value: object, choices: tuple[str, ...], owner: str) -> None:
    """Raise if ``value`` is not one of the named ``choices`` (a mode, a loss type, a resampling)."""
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {', '.join(choices)}, got {value!r}.")


def json_object(name: str, value: str | dict[str, Any] | None, example: str) -> dict[str, Any] | None:
    """``value`` as a dict: JSON text parsed, a dict or None as given; a ``ValueError`` naming ``name`` and showing
    ``example`` for text that is not JSON or not a JSON object."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name} is not valid JSON ({error}): pass e.g. '{example}'.") from None
    if not isinstance(value, dict | None):
        raise ValueError(f"{name} must be a JSON object such as '{example}', got {value!r}.")
    return value
