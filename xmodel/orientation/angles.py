"""The SL orientation from its zone axis, in-plane angle and tilts, and back.

Contract (docs/conventions.md, "Crystal frames and orientation matrices"):
``R_sl = R_e1(tilt1) @ R_e2(tilt2) @ R_e3(inplane) @ R_base`` maps SL crystal coordinates to lab
coordinates; `base_orientation` builds ``R_base`` from the zone axis along the beam (numpy),
`sl_orientation` composes ``R_sl`` (pure JAX, differentiable in the angles), and
`decompose_orientation` recovers zone axis, tilts and in-plane angle from fitted orientations
(numpy), choosing among the cubic copies.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from xmodel.orientation.checks import as_direction, check_matrices, format_direction
from xmodel.orientation.rotations import rotation_about_axis
from xmodel.orientation.symmetry import cubic_symmetry_operators
from xmodel.precision import EXACT

__all__ = ["base_orientation", "decompose_orientation", "sl_orientation"]


def _default_reference(beam: np.ndarray) -> np.ndarray:
    """The cube axis most nearly perpendicular to ``beam`` (ties -> [100] before [010], [001])."""
    cosines = np.abs(beam) / np.linalg.norm(beam)
    return np.eye(3)[int(np.flatnonzero(cosines <= cosines.min() + 1e-12)[0])]


def base_orientation(beam_direction, reference=None) -> np.ndarray:
    """``R_base`` (SL crystal -> lab) that puts a crystal direction along the beam (numpy).

    Parameters
    ----------
    beam_direction : array_like, shape (3,)
        Crystal direction ``[u, v, w]`` (SL crystal frame, any length) mapped onto +e3, the
        incident beam direction.
    reference : array_like, shape (3,), optional
        Crystal direction whose component normal to ``beam_direction`` is mapped onto +e2
        (dim2, horizontal on the detector). Any direction not parallel to ``beam_direction``
        works; it is projected. Default: the cube axis [100], [010] or [001] most nearly
        perpendicular to the beam direction, ties going to the earlier one. So [00-1] puts [100]
        horizontal, [-110] puts [001] horizontal, [30-1] puts [010] horizontal, and [112] puts
        the projection of [100], [5 -1 -2]/sqrt(30), horizontal.

    Returns
    -------
    numpy.ndarray, shape (3, 3), float64
        Proper rotation with rows ``(r x b, r, b)``: ``b`` the unit beam direction, ``r`` the
        unit normal component of the reference (so crystal ``r x b`` lies along +e1).

    Notes
    -----
    Orthonormal triad from two directions (Gram-Schmidt); conventions in docs/conventions.md.
    The paper's zone axes are [00-1], [-110] and [30-1] (Fig. 1, S4).

    Validation: ``R_base @ b == e3``, ``R_base @ r_perp == e2``, orthonormal, det 1 (tests).
    """
    b = as_direction(beam_direction, "beam_direction", "base_orientation")
    b = b / np.linalg.norm(b)
    if reference is None:
        r = _default_reference(b)
    else:
        r = as_direction(reference, "reference", "base_orientation")
    r_perp = r - np.dot(r, b) * b
    if np.linalg.norm(r_perp) < 1e-8 * np.linalg.norm(r):
        raise ValueError(f"base_orientation: reference {format_direction(r)} is parallel to "
                         f"beam_direction {format_direction(beam_direction)}, so it does not fix the "
                         f"in-plane angle; choose a reference direction not parallel to the "
                         f"beam (or leave it out for the default cube axis).")
    r_perp = r_perp / np.linalg.norm(r_perp)
    return np.stack([np.cross(r_perp, b), r_perp, b])


def sl_orientation(R_base, inplane, tilt1, tilt2) -> jnp.ndarray:
    """SL orientation ``R_sl = R_e1(tilt1) @ R_e2(tilt2) @ R_e3(inplane) @ R_base``, pure JAX.

    Parameters
    ----------
    R_base : array_like, shape (..., 3, 3)
        SL crystal -> lab at zero angles (`base_orientation`).
    inplane : array_like, shape (...)
        Rotation about the beam, e3 (rad).
    tilt1, tilt2 : array_like, shape (...)
        Out-of-plane tilts about lab e1 and e2 (rad). All four arguments broadcast.

    Returns
    -------
    jax.Array, shape (..., 3, 3)
        SL crystal -> lab. Its dtype is that of the angles (Python floats -> default float);
        ``R_base`` is cast to it.

    Notes
    -----
    docs/conventions.md, "Crystal frames and orientation matrices".

    Validation: equals the explicit matrix product of scipy elementary rotations (tests).
    """
    dtype = jnp.result_type(jnp.asarray(inplane), jnp.asarray(tilt1), jnp.asarray(tilt2), float)
    rot = jnp.matmul(rotation_about_axis(0, jnp.asarray(tilt1, dtype)),
                     rotation_about_axis(1, jnp.asarray(tilt2, dtype)), precision=EXACT)
    rot = jnp.matmul(rot, rotation_about_axis(2, jnp.asarray(inplane, dtype)), precision=EXACT)
    return jnp.matmul(rot, jnp.asarray(R_base, dtype), precision=EXACT)


def decompose_orientation(R: np.ndarray, zones: list[tuple[np.ndarray, np.ndarray | None]]
                          ) -> dict[str, np.ndarray]:
    """Zone axis, tilts and in-plane angle of SL orientations: the inverse of `sl_orientation` (numpy).

    Parameters
    ----------
    R : array_like, shape (N, 3, 3) (or (3, 3))
        SL crystal -> lab orientations, known only up to a cubic symmetry operator.
    zones : list of (b, r)
        Candidate zone axes ``b`` with their in-plane reference ``r`` (or None for the default
        of `base_orientation`), SL crystal directions, as ``beam_direction`` /
        ``inplane_reference`` of the domain TOML files.

    Returns
    -------
    dict of numpy.ndarray
        ``zone_axis`` (N, 3; the unit ``b`` chosen), ``tilt1_deg``, ``tilt2_deg``, ``tilt_deg``
        (``hypot(tilt1, tilt2)``), ``inplane_deg`` (N,), degrees; NaN where ``R`` is not finite.

    Raises
    ------
    ValueError
        If ``R`` is not (..., 3, 3), ``zones`` is empty or a zone axis is not a direction.

    Notes
    -----
    For each symmetric copy ``R S`` (24 cubic S) and zone, ``v = R S b`` (unit) is the lab
    direction of the zone; ``R_e1(t1) R_e2(t2) e3 = (sin t2, -sin t1 cos t2, cos t1 cos t2)`` gives
    ``t2 = asin(v1)``, ``t1 = atan2(-v2, v3)``, and ``R_e3(inplane) = (R_e1 R_e2)^T R S R_base^T``.
    The copy with the smallest ``hypot(t1, t2)`` wins, ties (zone symmetry) by the smallest
    ``|inplane|``. docs/conventions.md; the twin's truth (`xmodel.twin.point_truth`).

    Validation: recovers tilt1, tilt2 and inplane of `sl_orientation` from a cubic copy ``R S``
    to 1e-6 deg (tests/xmodel/test_orientation.py).
    """
    func = "decompose_orientation"
    R = check_matrices(R, "R", func).reshape(-1, 3, 3)
    if len(zones) == 0:
        raise ValueError(f"{func}: zones is empty; give at least one (zone axis, in-plane reference or "
                         f"None) pair, e.g. [((0, 0, -1), (1, 0, 0))].")
    zones = [(as_direction(b, f"zone axis {k}", func), r) for k, (b, r) in enumerate(zones)]
    ops = cubic_symmetry_operators()
    n = R.shape[0]
    out = {"zone_axis": np.full((n, 3), np.nan), "tilt1_deg": np.full(n, np.nan),
           "tilt2_deg": np.full(n, np.nan), "tilt_deg": np.full(n, np.nan), "inplane_deg": np.full(n, np.nan)}
    ok = np.all(np.isfinite(R), axis=(1, 2))
    if not ok.any():
        return out
    Rs = np.einsum("nij,sjk->nsik", R[ok], ops)                        # (n, 24, 3, 3)
    best_key = np.full(Rs.shape[0], np.inf)
    for b, r in zones:
        b = b / np.linalg.norm(b)
        base = base_orientation(b, r)
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
