"""Counting noise for synthetic patterns."""
from __future__ import annotations

import numpy as np


def scale_to_total(expected: np.ndarray, total_counts: float, valid: np.ndarray | None = None) -> np.ndarray:
    """Scale an expected-counts image so that its valid pixels hold ``total_counts`` in all.

    Raises if the image carries no signal (sum <= 0), since no scale can give it counts.
    """
    expected = np.asarray(expected, np.float64)
    s = expected[valid].sum() if valid is not None else expected.sum()
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"cannot scale a pattern with total intensity {s} to {total_counts} counts; "
                         "the pattern holds no signal on valid pixels")
    return expected * (float(total_counts) / s)


def poisson_counts(expected: np.ndarray, seed: int | None = 0, dtype=np.uint32) -> np.ndarray:
    """Poisson-distributed counts with the given expectation (counts per pixel).

    Notes
    -----
    Photon counting statistics of a single-photon-counting detector (Eiger): each pixel's
    count is Poisson(expected). Deterministic for a given ``seed`` (numpy PCG64).
    """
    expected = np.asarray(expected, np.float64)
    if np.any(~np.isfinite(expected)) or np.any(expected < 0):
        bad = np.flatnonzero(~np.isfinite(expected) | (expected < 0))
        raise ValueError(f"expected counts must be finite and >= 0; {bad.size} pixels are not "
                         f"(first flat index {bad[0]}, value {expected.reshape(-1)[bad[0]]})")
    rng = np.random.default_rng(seed)
    return rng.poisson(expected).astype(dtype)
