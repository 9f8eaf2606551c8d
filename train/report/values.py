"""Values read from runs as numbers: finite floats or None, a sort order that puts 2 before 16,
and mean / standard deviation / count over seeds."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np


def finite_number(value: Any) -> Optional[float]:
    """`value` as a finite float, or None (booleans, None, text, NaN and infinities)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def sort_key(value: Any) -> tuple:
    """Numbers first, in numeric order; then everything else as text."""
    number = finite_number(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def mean_sd_n(values: list[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0, int(arr.size)
