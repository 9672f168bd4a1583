"""Orientation relationships between the superlattice and its nanocrystals (Conf1, Conf2, custom).

``R_or`` maps AL (nanocrystal) crystal coordinates to SL crystal coordinates
(`orientation_relationship`); the NC orientation is ``R_al = R_sl @ R_or @ R_mis`` with
``R_mis = exp([w]_x)``, ``w`` the misorientation rotation vector (`al_orientation`, pure JAX);
`relationship_variants` lists the distinct NC orientations one relationship allows for one SL
pattern. docs/conventions.md, "Crystal frames and orientation matrices".
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from xmodel.orientation.checks import as_direction, check_matrices, format_direction
from xmodel.orientation.rotations import rotation_matrix
from xmodel.orientation.symmetry import cubic_symmetry_operators
from xmodel.precision import EXACT

__all__ = ["RELATIONSHIPS", "al_orientation", "orientation_relationship", "relationship_variants"]

#: named orientation relationships: ((sl_dir1, al_dir1), (sl_dir2, al_dir2)) (paper, Discussion)
RELATIONSHIPS = {
    "conf1": (((1, 1, 0), (1, 0, 0)), ((0, 0, 1), (0, 0, 1))),
    "conf2": (((1, 1, 0), (1, 0, 0)), ((0, 0, 1), (0, 1, 1))),
}


def _pair_frame(d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """Columns: unit d1, unit normal part of d2, their cross product."""
    e1 = d1 / np.linalg.norm(d1)
    e2 = d2 - np.dot(d2, e1) * e1
    e2 = e2 / np.linalg.norm(e2)
    return np.stack([e1, e2, np.cross(e1, e2)], axis=1)


def _angle_deg(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.degrees(np.arctan2(np.linalg.norm(np.cross(u, v)), np.dot(u, v))))


def orientation_relationship(name: str = "conf1", pairs=None) -> np.ndarray:
    """``R_or``: AL (nanocrystal) crystal coordinates -> SL crystal coordinates (numpy).

    Parameters
    ----------
    name : {"conf1", "conf2", "custom"}
        Case-insensitive. ``"conf1"``: [110]SL || [100]AL and [001]SL || [001]AL. ``"conf2"``: [110]SL || [100]AL
        and [001]SL || [011]AL. ``"custom"``: from ``pairs``.
    pairs : sequence, optional
        Only for ``"custom"``: ``((sl_dir1, al_dir1), (sl_dir2, al_dir2))``, crystal directions
        (any length) of the SL and the AL that are parallel. The first pair is made exactly
        parallel, the second as close as possible; the angle between the two SL directions and
        between the two AL directions must agree within 1 degree.

    Returns
    -------
    numpy.ndarray, shape (3, 3), float64
        Proper rotation with ``R_or @ al_dir1 || sl_dir1``.

    Notes
    -----
    Conf1 and Conf2 from the paper (Discussion, Fig. 5); Conf1 is a 45 deg rotation about
    [001], and ``R_or(conf2) = R_or(conf1) @ R_[100]AL(45 deg)``. From two pairs of directions:
    ``R_or = F_sl @ F_al^T`` with ``F`` the orthonormal triads of `_pair_frame`.

    Validation: Conf1 puts 4 of the 12 <110>SL along <100>AL and the other 8 at 9.7 deg
    from <111>AL (the paper's 4 {100}-{100} + 8 {111}-{111} contacts); Conf2 relation (tests).
    """
    func = "orientation_relationship"
    name = name.lower() if isinstance(name, str) else name  # the paper writes "Conf1"
    if name not in ("conf1", "conf2", "custom"):
        raise ValueError(f"{func}: unknown orientation relationship {name!r}; valid names are "
                         f"'conf1', 'conf2' and 'custom' (check atomic_lattice.configuration).")
    if name != "custom":
        if pairs is not None:
            raise ValueError(f"{func}: pairs={pairs!r} were given with name {name!r}; pairs are "
                             f"only used with name 'custom'. Drop them or set name='custom'.")
        pairs = RELATIONSHIPS[name]
    elif pairs is None:
        raise ValueError(f"{func}: name 'custom' needs pairs=((sl_dir1, al_dir1), (sl_dir2, "
                         f"al_dir2)), e.g. (([1, 1, 0], [1, 0, 0]), ([0, 0, 1], [0, 0, 1])) for "
                         f"Conf1 (atomic_lattice.custom_pairs).")
    try:
        arr = np.asarray(pairs, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != (2, 2, 3):
        raise ValueError(f"{func}: pairs must be ((sl_dir1, al_dir1), (sl_dir2, al_dir2)) with "
                         f"3-vectors, got {pairs!r}; e.g. (([1, 1, 0], [1, 0, 0]), ([0, 0, 1], "
                         f"[0, 0, 1])).")
    labels = (("sl_dir1", "al_dir1"), ("sl_dir2", "al_dir2"))
    (s1, a1), (s2, a2) = [[as_direction(arr[i, j], labels[i][j], func) for j in range(2)]
                          for i in range(2)]
    for side, (u, v) in (("SL", (s1, s2)), ("AL", (a1, a2))):
        if np.linalg.norm(np.cross(u, v)) < 1e-8 * np.linalg.norm(u) * np.linalg.norm(v):
            raise ValueError(f"{func}: the two {side} directions {format_direction(u)} and {format_direction(v)} are "
                             f"parallel, so they do not fix a rotation; give two "
                             f"non-parallel directions per lattice.")
    angle_sl, angle_al = _angle_deg(s1, s2), _angle_deg(a1, a2)
    if abs(angle_sl - angle_al) > 1.0:
        raise ValueError(f"{func}: the SL directions {format_direction(s1)} and {format_direction(s2)} are "
                         f"{angle_sl:.2f} deg apart but the AL directions {format_direction(a1)} and "
                         f"{format_direction(a2)} are {angle_al:.2f} deg apart; they must agree within "
                         f"1 deg for both pairs to be parallel. Check the pairs.")
    return _pair_frame(s1, s2) @ _pair_frame(a1, a2).T


def al_orientation(R_sl, R_or, misorientation_rotvec) -> jnp.ndarray:
    """NC orientation ``R_al = R_sl @ R_or @ exp([w]_x)``, pure JAX.

    Parameters
    ----------
    R_sl : array_like, shape (..., 3, 3)
        SL crystal -> lab (`sl_orientation`).
    R_or : array_like, shape (..., 3, 3)
        AL crystal -> SL crystal (`orientation_relationship`).
    misorientation_rotvec : array_like, shape (..., 3)
        Rotation vector ``w`` (rad) in the AL crystal frame, the NCs' deviation from the
        ideal relationship.

    Returns
    -------
    jax.Array, shape (..., 3, 3)
        AL crystal -> lab, dtype of ``R_sl`` and ``w`` promoted; ``R_or`` is cast to it.

    Notes
    -----
    docs/conventions.md, "Crystal frames and orientation matrices".

    Validation: zero misorientation gives ``R_sl @ R_or`` exactly (tests).
    """
    dtype = jnp.result_type(jnp.asarray(R_sl), jnp.asarray(misorientation_rotvec), float)
    w = jnp.asarray(misorientation_rotvec, dtype)
    return jnp.matmul(jnp.matmul(jnp.asarray(R_sl, dtype), jnp.asarray(R_or, dtype), precision=EXACT),
                      rotation_matrix(w), precision=EXACT)


def relationship_variants(relationship: np.ndarray) -> list[np.ndarray]:
    """Distinct ``S R_or`` over the 24 cubic ``S``: the NC orientations one relationship allows.

    Parameters
    ----------
    relationship : array_like, shape (3, 3)
        ``R_or``, AL crystal -> SL crystal (`orientation_relationship`).

    Returns
    -------
    list of numpy.ndarray, each shape (3, 3), float64
        Representatives ``S R_or`` of the distinct cosets ``{S R_or T}`` (``S``, ``T`` cubic), in
        the order of `cubic_symmetry_operators` (the identity's first): 3 for Conf1, 6 for Conf2.

    Raises
    ------
    ValueError
        If ``relationship`` is not one (3, 3) matrix.

    Notes
    -----
    The template search returns the SL orientation only up to a cubic symmetry operator ``S``
    (``R_sl`` and ``R_sl S`` give the same SL pattern), but the NC orientation
    ``R_sl S R_or`` (`al_orientation`) and hence the WAXS pattern depend on
    which copy unless ``R_or^T S R_or`` is itself cubic. Each representative is one distinct AL
    pattern for the same SL orientation; the WAXS part picks the one present.

    Validation: counts 3 and 6 for `orientation_relationship` Conf1 and Conf2, and every ``S R_or``
    equals exactly one representative up to a cubic ``T`` (tests/xmodel/test_orientation.py).
    """
    ops = np.asarray(cubic_symmetry_operators(), np.float64)
    R = check_matrices(relationship, "relationship", "relationship_variants")
    if R.shape != (3, 3):
        raise ValueError(f"relationship_variants: relationship must be one (3, 3) matrix R_or, got shape "
                         f"{R.shape}; build it with orientation_relationship.")
    reps: list[np.ndarray] = []
    for S in ops:
        M = S @ R
        if not any(np.any(np.all(np.abs(N.T @ M - ops) < 1e-6, axis=(1, 2))) for N in reps):
            reps.append(M)
    return reps
