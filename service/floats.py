"""NaN and +-inf: JSON has no token for them. In JSON columns they are stored as the strings below and read back
as floats; in API bodies they are emitted as null plus a `nonfinite` flag naming the value."""
from __future__ import annotations

import math

_STORED = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def nonfinite_name(x: float | None) -> str | None:
    """'nan', 'inf', '-inf', or None for a finite number (or None)."""
    if x is None or math.isfinite(x):
        return None
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def to_public(values: dict) -> tuple[dict, dict[str, str]]:
    """Replace every non-finite float of a flat dict by None; return it with {field: 'nan'|'inf'|'-inf'}."""
    out, flags = {}, {}
    for name, x in values.items():
        flag = nonfinite_name(x) if isinstance(x, float) else None
        if flag:
            flags[name] = flag
            x = None
        out[name] = x
    return out, flags


def encode(obj):
    """A JSON-safe copy: non-finite floats become 'NaN' / 'Infinity' / '-Infinity'."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode(v) for v in obj]
    return obj


def decode(obj):
    """The inverse of encode."""
    if isinstance(obj, str) and obj in _STORED:
        return _STORED[obj]
    if isinstance(obj, dict):
        return {k: decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    return obj
