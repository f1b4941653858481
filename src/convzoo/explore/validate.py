"""Checking what a request carries: every number bounded, every field known, the reason in one line."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import UserError


class RequestError(UserError):
    """A request the explorer refuses (HTTP 400), with its reason in one line."""


def parse_int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    """A query parameter as an int in ``low..high`` (``default`` when absent)."""
    if value is None:
        return default
    if not value.isdigit() or len(value) > 6:
        raise RequestError(f"{name} must be a whole number, got {value[:20]!r}")
    return bounded_int(int(value), name, low, high)


def bounded_int(value: Any, name: str, low: int, high: int) -> int:
    """``value`` if it is an int (not a bool) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{name} must be a whole number, got {type(value).__name__}")
    if not low <= value <= high:
        raise RequestError(f"{name} must be {low}..{high}, got {value}")
    return value


def number_grid(value: Any, name: str, depth: int, limits: tuple[int, ...], magnitude: float) -> list:
    """A nested list ``depth`` deep of finite numbers within ``+-magnitude``, rectangular, each axis's
    length at most its entry of ``limits``; returned as nested lists of floats."""
    def walk(item: Any, level: int) -> Any:
        if level == depth:
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
                raise RequestError(f"{name} must hold finite numbers, got {str(item)[:20]!r}")
            if abs(item) > magnitude:
                raise RequestError(f"{name}'s values must lie within +-{magnitude:g}, got {item:g}")
            return float(item)
        if not isinstance(item, list) or not 1 <= len(item) <= limits[level]:
            raise RequestError(f"{name} must be a {depth}-D list with at most "
                               f"{' x '.join(map(str, limits))} entries")
        return [walk(sub, level + 1) for sub in item]

    grid = walk(value, 0)
    shape, level = [], grid
    for _ in range(depth):
        shape.append(len(level))
        level = level[0]
    if not _rectangular(grid, shape):
        raise RequestError(f"{name} must be rectangular (every row as long as the first)")
    return grid


def _rectangular(grid: Any, shape: list[int]) -> bool:
    if not shape:
        return True
    return len(grid) == shape[0] and all(_rectangular(sub, shape[1:]) for sub in grid)


def known_fields(body: Any, allowed: set[str], name: str = "the request") -> Mapping[str, Any]:
    """``body`` if it is a JSON object whose keys are all in ``allowed``."""
    if not isinstance(body, dict):
        raise RequestError(f"{name} must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(f"{name} has unknown fields: {', '.join(k[:30] for k in unknown[:5])} "
                           f"(known: {', '.join(sorted(allowed))})")
    return body
