"""Reported angles of a fitted SL orientation: zone axis, tilts and in-plane angle.

The fitted SL orientation ``R`` is written as ``R S = R_e1(tilt1) R_e2(tilt2) R_e3(inplane)
base_orientation(b, r)`` for the cubic symmetry operator ``S`` and zone ``b`` (from the configured
zone axes, `fits.scan.settings.SearchSettings.zones`) that put ``b`` closest to the beam;
``tilt_deg = hypot(tilt1, tilt2)``, which for small tilts is the angle between the zone axis and
the beam, and ``inplane_deg`` is the rotation about the beam, taken with the smallest magnitude
among the symmetric equivalents. This is the convention of the twin's truth.h5
(`xmodel.twin.point_truth`), so recovered and true values compare directly.
"""
from __future__ import annotations

import numpy as np

from xmodel import orientation

#: the keys `decompose_orientation` returns, each a dataset of /entry/fits
ANGLE_KEYS = ("zone_axis", "tilt_deg", "tilt1_deg", "tilt2_deg", "inplane_deg")

def decompose_orientation(R: np.ndarray, zones: list[tuple[np.ndarray, np.ndarray | None]]
                          ) -> dict[str, np.ndarray]:
    """Zone axis, tilts and in-plane angle of SL orientations (numpy).

    Parameters
    ----------
    R : (N, 3, 3) SL crystal -> lab.
    zones : candidate (zone axis ``b``, in-plane reference ``r`` or None) pairs in SL crystal
        coordinates, as ``beam_direction`` / ``inplane_reference`` of the domain TOML files.

    Returns
    -------
    dict with ``zone_axis`` (N, 3), ``tilt1_deg``, ``tilt2_deg``, ``tilt_deg``, ``inplane_deg``
    (N,), NaN where ``R`` is not finite.

    Notes
    -----
    For each symmetric copy ``R S`` (24 cubic S) and zone, ``v = R S b`` (unit) is the lab
    direction of the zone; ``R_e1(t1) R_e2(t2) e3 = (sin t2, -sin t1 cos t2, cos t1 cos t2)`` gives
    ``t2 = asin(v1)``, ``t1 = atan2(-v2, v3)``, and ``R_e3(inplane) = (R_e1 R_e2)^T R S R_base^T``.
    The copy with the smallest ``hypot(t1, t2)`` wins, ties (zone symmetry) by the smallest
    ``|inplane|``. docs/conventions.md; the twin's truth (`xmodel.twin.point_truth`).

    Validation: recovers tilt1, tilt2, inplane of `xmodel.orientation.sl_orientation`
    (tests/fits/scan/test_angles.py).
    """
    R = np.asarray(R, np.float64).reshape(-1, 3, 3)
    ops = orientation.cubic_symmetry_operators()
    n = R.shape[0]
    out = {"zone_axis": np.full((n, 3), np.nan), "tilt1_deg": np.full(n, np.nan),
           "tilt2_deg": np.full(n, np.nan), "tilt_deg": np.full(n, np.nan), "inplane_deg": np.full(n, np.nan)}
    ok = np.all(np.isfinite(R), axis=(1, 2))
    if not ok.any():
        return out
    Rs = np.einsum("nij,sjk->nsik", R[ok], ops)                        # (n, 24, 3, 3)
    best_key = np.full(Rs.shape[0], np.inf)
    for b, r in zones:
        b = np.asarray(b, float) / np.linalg.norm(b)
        base = orientation.base_orientation(b, r)
        v = np.einsum("nsij,j->nsi", Rs, b)
        t2 = np.arcsin(np.clip(v[..., 0], -1, 1))
        t1 = np.arctan2(-v[..., 1], v[..., 2])
        c1, s1, c2, s2 = np.cos(t1), np.sin(t1), np.cos(t2), np.sin(t2)
        # (R_e1(t1) R_e2(t2))^T applied to R S R_base^T; only the first column's e1, e2 parts needed
        M = np.einsum("nsij,kj->nsik", Rs, base)                       # R S R_base^T
        T = np.zeros(t1.shape + (3, 3))
        T[..., 0, 0], T[..., 0, 1], T[..., 0, 2] = c2, 0.0, s2
        T[..., 1, 0], T[..., 1, 1], T[..., 1, 2] = s1 * s2, c1, -s1 * c2
        T[..., 2, 0], T[..., 2, 1], T[..., 2, 2] = -c1 * s2, s1, c1 * c2
        E = np.einsum("nsji,nsjk->nsik", T, M)                         # R_e3(inplane)
        inplane = np.arctan2(E[..., 1, 0], E[..., 0, 0])
        tilt = np.hypot(t1, t2)
        key = np.round(tilt, 6) * 1e3 + np.abs(inplane)                # tilt first, then |inplane|
        j = np.argmin(key, axis=1)
        take = lambda x: np.take_along_axis(x, j[:, None], 1)[:, 0]  # noqa: E731
        kbest = take(key)
        better = kbest < best_key
        best_key = np.where(better, kbest, best_key)
        idx = np.flatnonzero(ok)[better]
        out["zone_axis"][idx] = b
        out["tilt1_deg"][idx] = np.degrees(take(t1))[better]
        out["tilt2_deg"][idx] = np.degrees(take(t2))[better]
        out["tilt_deg"][idx] = np.degrees(take(tilt))[better]
        out["inplane_deg"][idx] = np.degrees(take(inplane))[better]
    return out

