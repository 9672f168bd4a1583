"""Validation of the numeric arguments of the analyses, at the library edge.

Every analysis entry point checks its numbers here before touching data, so that a bad value is
a `ValueError` in the configuration's style: the argument's name, the command-line option that
sets it, the value as given, the valid range with its unit, and an example. A value that passes
is returned converted (``float``, ``int`` or a ``(lo, hi)`` tuple).

Examples
--------
>>> positive_int(256, "batch", "--batch")
256
>>> q_interval((0.13, 0.16), "window", "--window")
(0.13, 0.16)
"""
from __future__ import annotations

import math

__all__ = ["finite_number", "positive_int", "q_interval", "interval"]


def _label(name: str, option: str) -> str:
    return f"{name} ({option})" if option else name


def _as_float(value) -> float:
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def finite_number(value, name: str, option: str = "", *, unit: str = "", gt: float | None = None,
                  ge: float | None = None, le: float | None = None, example: str = "") -> float:
    """``value`` as a finite float within the bounds; else a ValueError quoting it and the range."""
    v = _as_float(value)
    ok = math.isfinite(v) and (gt is None or v > gt) and (ge is None or v >= ge) and (le is None or v <= le)
    if not ok:
        bounds = [f"> {gt:g}" if gt is not None else "", f">= {ge:g}" if ge is not None else "",
                  f"<= {le:g}" if le is not None else ""]
        rng = " and ".join(b for b in bounds if b)
        raise ValueError(f"{_label(name, option)} = {value!r}: expected a finite number{' ' + rng if rng else ''}"
                         f"{' (' + unit + ')' if unit else ''}{', e.g. ' + example if example else ''}.")
    return v


def positive_int(value, name: str, option: str = "", *, maximum: int | None = None, example: str = "") -> int:
    """``value`` as an int >= 1 (and <= ``maximum``); a float with an integral value is accepted."""
    v = _as_float(value)
    ok = math.isfinite(v) and v.is_integer() and v >= 1 and (maximum is None or v <= maximum)
    if not ok:
        top = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{_label(name, option)} = {value!r}: expected an integer >= 1{top}"
                         f"{', e.g. ' + example if example else ''}.")
    return int(v)


def interval(pair, name: str, option: str = "", *, unit: str = "", lower: float = -math.inf,
             example: str = "") -> tuple[float, float]:
    """A pair ``(lo, hi)`` of finite numbers with ``lower <= lo < hi``."""
    try:
        lo, hi = (_as_float(x) for x in pair)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and lower <= lo < hi):
        low = f"{lower:g} <= " if math.isfinite(lower) else ""
        raise ValueError(f"{_label(name, option)} = {pair!r}: expected two finite numbers LO, HI with "
                         f"{low}LO < HI{' (' + unit + ')' if unit else ''}{', e.g. ' + example if example else ''}.")
    return lo, hi


def q_interval(pair, name: str, option: str = "", example: str = "0.130,0.160") -> tuple[float, float]:
    """A q window ``(q_lo, q_hi)`` in 1/A with ``0 < q_lo < q_hi`` (q = 0 is the direct beam)."""
    try:
        lo, hi = (_as_float(x) for x in pair)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo < hi):
        raise ValueError(f"{_label(name, option)} = {pair!r}: expected two finite numbers Q_LO, Q_HI with "
                         f"0 < Q_LO < Q_HI in 1/A (q = 0 is the direct beam), e.g. {example}.")
    return lo, hi
