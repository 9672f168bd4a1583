"""Cubic lattices: allowed reflections, reciprocal lattice vectors, families and spacings.

Contract
--------
* Reflection lists are *static*: they are built once with numpy, outside ``jax.jit``, for a
  lattice constant and a maximum ``|q|``, and then passed to the forward model as constant
  integer arrays of Miller indices ``hkl`` with shape ``(N, 3)``.
* Everything that depends on the lattice constant ``a`` (``g_vectors``, ``q_of``,
  ``d_spacing``, ``lattice_constant_from_q``) is plain arithmetic, so it works with numpy
  arrays and with JAX arrays, including a traced ``a`` inside ``jax.jit``/``jax.grad``.

Units follow ``docs/conventions.md``: lattice constants and d-spacings in Angstrom,
scattering vectors ``q`` and reciprocal lattice vectors ``G`` in 1/Angstrom, in the crystal
frame of the lattice (``G = (2 pi / a) hkl``; rotate with ``R_sl`` or ``R_al`` to the lab).

Both the nanocrystal superlattice (SL, fcc, a ~ 150 A) and the PbS atomic lattice (AL,
rock salt on an fcc Bravais lattice, a = 5.936 A) have the same extinction rule: ``h, k, l``
all even or all odd.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = [
    "fcc_allowed",
    "fcc_reflections",
    "rock_salt_reflections",
    "g_vectors",
    "families",
    "multiplicity",
    "d_spacing",
    "q_of",
    "lattice_constant_from_q",
]

#: Largest |h|, |k|, |l| enumerated by the reflection builders (bounds memory: (2*128+1)^3
#: candidate triples, about 0.4 GB of int64). Larger requests raise a ValueError.
MAX_INDEX = 128

#: Relative tolerance of the inclusive ``|G| <= q_max`` cut, so that ``q_max = q_of(hkl, a)``
#: computed in floating point keeps ``hkl``.
_Q_MAX_RTOL = 1e-12


def _as_hkl(hkl: np.ndarray, name: str = "hkl") -> np.ndarray:
    """Return ``hkl`` as an integer numpy array of shape ``(..., 3)``; raise on bad input."""
    arr = np.asarray(hkl)
    if arr.ndim == 0 or arr.shape[-1] != 3:
        raise ValueError(
            f"{name} must have shape (..., 3) (Miller indices h, k, l in the last axis), "
            f"got shape {arr.shape}. Pass e.g. np.array([[1, 1, 1], [2, 0, 0]])."
        )
    if not np.issubdtype(arr.dtype, np.integer):
        rounded = np.rint(arr)
        if not np.all(np.isfinite(arr)) or not np.array_equal(rounded, arr):
            raise ValueError(
                f"{name} must hold integer Miller indices, got non-integer values "
                f"{arr[rounded != arr][:4].tolist()}. Round them or pass an int array."
            )
        arr = rounded.astype(np.int64)
    return arr.astype(np.int64, copy=False)


def _check_positive(value: float, name: str, hint: str) -> float:
    """Return ``value`` as float if it is finite and > 0, otherwise raise a ValueError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number ({hint}), got {value!r}.") from None
    if not math.isfinite(v) or v <= 0.0:
        raise ValueError(f"{name} must be a positive, finite number ({hint}), got {value!r}.")
    return v


def fcc_allowed(hkl: np.ndarray) -> np.ndarray:
    """Extinction rule of the face-centred cubic Bravais lattice.

    Parameters
    ----------
    hkl
        Integer Miller indices, shape ``(..., 3)``, in the conventional cubic cell.

    Returns
    -------
    numpy.ndarray
        Boolean, shape ``(...)``: True where h, k, l are all even or all odd, excluding
        (000).

    Notes
    -----
    The structure factor of the four lattice points (000), (0 1/2 1/2), (1/2 0 1/2),
    (1/2 1/2 0) is ``1 + (-1)^(k+l) + (-1)^(h+l) + (-1)^(h+k)``, which is 4 for unmixed and 0
    for mixed parity (International Tables for Crystallography Vol. A, reflection conditions
    for F lattices, doi:10.1107/97809553602060000100).

    Validation
    ----------
    Against the explicit four-point lattice sum in ``tests/xmodel/test_lattice.py``.
    """
    arr = _as_hkl(hkl)
    parity = np.mod(arr, 2)
    unmixed = np.all(parity == parity[..., :1], axis=-1)
    nonzero = np.any(arr != 0, axis=-1)
    return unmixed & nonzero


def _allowed_reflections(a: float, q_max: float, lattice: str) -> np.ndarray:
    """Enumerate fcc-allowed reflections with ``0 < |G| <= q_max``, sorted (see callers)."""
    a = _check_positive(a, "a", f"the {lattice} lattice constant in Angstrom")
    q_max = _check_positive(q_max, "q_max", "the largest |G| to keep, in 1/Angstrom")
    # |G| = 2 pi sqrt(s) / a <= q_max  <=>  s <= (q_max a / 2 pi)^2
    s_max = (q_max * a / (2.0 * math.pi)) ** 2 * (1.0 + _Q_MAX_RTOL) ** 2
    n = int(math.floor(math.sqrt(s_max)))
    if n > MAX_INDEX:
        raise ValueError(
            f"q_max = {q_max} 1/A with a = {a} A needs Miller indices up to {n}, more than the "
            f"{MAX_INDEX} this builder enumerates. Lower q_max (the detector's largest |q|) or "
            f"check that a is in Angstrom."
        )
    r = np.arange(n, -n - 1, -1, dtype=np.int64)
    hkl = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)
    s = np.sum(hkl * hkl, axis=-1)
    keep = (s <= s_max) & fcc_allowed(hkl)
    hkl, s = hkl[keep], s[keep]
    # Primary key |G| (via the exact integer s), then h, k, l descending.
    order = np.lexsort((-hkl[:, 2], -hkl[:, 1], -hkl[:, 0], s))
    return hkl[order]


def fcc_reflections(a: float, q_max: float) -> np.ndarray:
    """All allowed reflections of an fcc lattice up to ``q_max``.

    Parameters
    ----------
    a
        Cubic lattice constant, Angstrom (the superlattice default is 150 A).
    q_max
        Largest ``|G|`` to keep, 1/Angstrom (inclusive, relative tolerance 1e-12).

    Returns
    -------
    numpy.ndarray
        int64, shape ``(N, 3)``: every member ``hkl`` (not one per family) with
        ``0 < |G| = 2 pi sqrt(h^2 + k^2 + l^2) / a <= q_max`` and h, k, l all even or all odd,
        sorted by ``|G|`` and then by ``(h, k, l)`` in descending lexicographic order.
        Deterministic.

    Raises
    ------
    ValueError
        If ``a`` or ``q_max`` is not a positive finite number, or if the request needs Miller
        indices beyond ``MAX_INDEX``.

    Notes
    -----
    ``|G_hkl| = 2 pi sqrt(h^2 + k^2 + l^2) / a`` for a cubic cell (paper, Table S1 indexing);
    extinction rule as in :func:`fcc_allowed`.

    Validation
    ----------
    Family counts equal the m3m multiplicities; q(200), q(311), q(222), q(331) for
    a = 150 A against hand values (``tests/xmodel/test_lattice.py``).

    Examples
    --------
    >>> fcc_reflections(150.0, 0.08)[:2].tolist()
    [[1, 1, 1], [1, 1, -1]]
    """
    return _allowed_reflections(a, q_max, "superlattice (fcc)")


def rock_salt_reflections(a: float, q_max: float) -> np.ndarray:
    """All allowed reflections of a rock-salt lattice (e.g. PbS) up to ``q_max``.

    Parameters
    ----------
    a
        Cubic lattice constant, Angstrom (PbS: 5.936 A).
    q_max
        Largest ``|G|`` to keep, 1/Angstrom (inclusive).

    Returns
    -------
    numpy.ndarray
        int64, shape ``(N, 3)``, same ordering as :func:`fcc_reflections`.

    Notes
    -----
    Rock salt is two interpenetrating fcc lattices (Pb at 000, S at 1/2 1/2 1/2) on an fcc
    Bravais lattice, so the extinction rule is the fcc one; all-even reflections have
    ``F = 4 (f_Pb + f_S)`` and all-odd ``F = 4 (f_Pb - f_S)`` (see
    :mod:`xmodel.structure_factor`). Kept as its own function so the atomic-lattice code
    reads as such.

    Validation
    ----------
    Same tests as :func:`fcc_reflections`; 111 at 1.833 1/A and 200 at 2.117 1/A.
    """
    return _allowed_reflections(a, q_max, "rock-salt atomic")


def g_vectors(hkl, a):
    """Reciprocal lattice vectors ``G = (2 pi / a) hkl`` in the crystal frame.

    Parameters
    ----------
    hkl
        Miller indices, shape ``(N, 3)`` (numpy or JAX array).
    a
        Cubic lattice constant, Angstrom; a Python float, numpy scalar or (traced) JAX scalar.

    Returns
    -------
    array
        Shape ``(N, 3)``, 1/Angstrom, crystal frame; a JAX array if ``a`` or ``hkl`` is one.

    Notes
    -----
    Cubic reciprocal basis ``b_i = 2 pi e_i / a`` (conventions.md, "Crystal frames").
    Differentiable in ``a`` under JAX.

    Validation
    ----------
    ``|G|`` equals :func:`q_of`; ``jax.grad`` in ``a`` equals ``-G / a``.
    """
    return (2.0 * math.pi / a) * hkl


def _sum_sq(hkl):
    """``h^2 + k^2 + l^2`` along the last axis, numpy- and JAX-compatible."""
    return (hkl * hkl).sum(axis=-1)


def q_of(hkl, a):
    """Length of the reciprocal lattice vector, ``|G_hkl| = 2 pi sqrt(h^2+k^2+l^2) / a``.

    Parameters
    ----------
    hkl
        Miller indices, shape ``(..., 3)``.
    a
        Cubic lattice constant, Angstrom (may be a traced JAX scalar).

    Returns
    -------
    array
        Shape ``(...)``, 1/Angstrom.

    Notes
    -----
    Cubic cell, ``q = 2 pi / d`` (paper, Table S1).

    Validation
    ----------
    a = 150 A: q(200) = 0.0838, q(311) = 0.1389, q(222) = 0.1451, q(331) = 0.1826 1/A.
    """
    return (2.0 * math.pi / a) * _sum_sq(hkl) ** 0.5


def d_spacing(hkl, a):
    """Interplanar spacing ``d_hkl = a / sqrt(h^2 + k^2 + l^2)``.

    Parameters
    ----------
    hkl
        Miller indices, shape ``(..., 3)``; not (000).
    a
        Cubic lattice constant, Angstrom.

    Returns
    -------
    array
        Shape ``(...)``, Angstrom.

    Notes
    -----
    Cubic cell; ``d = 2 pi / |G|`` (Bragg's law ``lambda = 2 d sin theta``).

    Validation
    ----------
    ``2 pi / d_spacing == q_of`` in the tests; PbS d(111) = 3.427 A.
    """
    return a / _sum_sq(hkl) ** 0.5


def lattice_constant_from_q(q, hkl):
    """Cubic lattice constant from a measured peak position and its indexing.

    Parameters
    ----------
    q
        Peak position ``|q|``, 1/Angstrom, scalar or shape ``(...)``.
    hkl
        Miller indices the peak is indexed with, shape ``(3,)`` or ``(..., 3)``.

    Returns
    -------
    array
        ``a = 2 pi sqrt(h^2 + k^2 + l^2) / q``, Angstrom.

    Notes
    -----
    Inverse of :func:`q_of`. A check of Table S1: q = 0.183 1/A indexed 331 gives
    ``2 pi sqrt(19) / 0.183 = 149.7 A`` (the table's 151.3 A belongs to q = 0.181 1/A).

    Validation
    ----------
    Round trip with :func:`q_of`; the Table S1 numbers above.
    """
    return 2.0 * math.pi * _sum_sq(hkl) ** 0.5 / q


def families(hkl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group reflections into cubic (m3m) families ``{hkl}``.

    Parameters
    ----------
    hkl
        Integer Miller indices, shape ``(N, 3)``.

    Returns
    -------
    family_index : numpy.ndarray
        int64, shape ``(N,)``: index into ``representatives`` for each reflection.
    representatives : numpy.ndarray
        int64, shape ``(F, 3)``: one ``hkl`` per family with ``|h| >= |k| >= |l| >= 0``,
        ordered by ``|G|`` and then descending lexicographically (e.g. 111, 200, 220, 311,
        222, ...). ``np.bincount(family_index)`` gives the number of members present, which
        for a complete reflection list equals :func:`multiplicity`.

    Notes
    -----
    The 48 operations of m3m are all permutations of (h, k, l) combined with all sign
    changes, so two reflections belong to the same family iff their sorted absolute values
    agree (International Tables Vol. A, point group m3m).

    Validation
    ----------
    Counts on complete lists from :func:`fcc_reflections` equal :func:`multiplicity`.
    """
    arr = _as_hkl(hkl)
    if arr.ndim != 2:
        raise ValueError(f"hkl must have shape (N, 3), got shape {arr.shape}. Reshape it to (-1, 3).")
    rep = -np.sort(-np.abs(arr), axis=-1)
    uniq, inverse = np.unique(rep, axis=0, return_inverse=True)
    s = _sum_sq(uniq)
    order = np.lexsort((-uniq[:, 2], -uniq[:, 1], -uniq[:, 0], s))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[inverse.reshape(-1)].astype(np.int64), uniq[order].astype(np.int64)


def multiplicity(hkl_family) -> int:
    """Number of distinct reflections in the cubic (m3m) family ``{hkl}``.

    Parameters
    ----------
    hkl_family
        Three integer Miller indices, any order and signs.

    Returns
    -------
    int
        E.g. {111}: 8, {200}: 6, {220}: 12, {311}: 24, {420}: 24, {321}: 48; {000}: 1.

    Notes
    -----
    Size of the orbit of ``hkl`` under the 48 signed permutations of m3m (International
    Tables Vol. A; powder multiplicities as in Cullity, Elements of X-ray Diffraction,
    App. 13).

    Validation
    ----------
    The values above; equals the member counts of :func:`families` on complete lists.
    """
    arr = _as_hkl(hkl_family, "hkl_family")
    if arr.shape != (3,):
        raise ValueError(
            f"hkl_family must be three Miller indices, e.g. (3, 1, 1), got shape {arr.shape}."
        )
    orbit = {
        tuple(int(s) * int(v) for s, v in zip(signs, perm))
        for perm in itertools.permutations(arr.tolist())
        for signs in itertools.product((1, -1), repeat=3)
    }
    return len(orbit)
