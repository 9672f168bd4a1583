"""Atomic scattering factors and the PbS (rock-salt) structure factor at the beam energy.

Contract
--------
numpy only; values are constants per reflection, computed once outside ``jax.jit`` (the
reflection list is static, see :mod:`xmodel.lattice`) and handed to the forward model as
arrays. Scattering vectors ``q`` in 1/Angstrom, energies in keV, lattice constants in
Angstrom, scattering factors in electrons.

Tables (through xraydb, https://xraypy.github.io/XrayDB/):

* ``f0(q)``: Waasmaier & Kirfel (1995), Acta Cryst. A51, 416, doi:10.1107/S0108767394013292.
  ``xraydb.f0(element, s)`` takes ``s = sin(theta) / lambda = q / (4 pi)`` in 1/Angstrom
  (its docstring, Note 4), valid for ``s <= 6`` 1/A.
* ``f'(E)`` and ``f''(E)``: Chantler (2000), J. Phys. Chem. Ref. Data 29, 597,
  doi:10.1063/1.1321055. ``xraydb.f1_chantler`` returns the *anomalous* part ``f'`` only,
  not ``Z + f'``: Pb at 13.8 keV gives -8.0 e, and xraydb itself forms the total forward
  factor as ``atomic_number + f1_chantler`` (``xraydb.xray.Scatterer``) and
  ``f0(el, 0) + f1_chantler`` (``xraydb.darwin_width``). Chantler's ``f'`` includes its
  relativistic and nuclear-Thomson corrections (hence about -1.8 e for Pb at 100 keV).
  ``f2_chantler`` is ``f''``.
"""

from __future__ import annotations

import math

import numpy as np

from xmodel.lattice import _as_hkl, _check_positive, q_of

__all__ = [
    "PBS_LATTICE_CONSTANT",
    "atomic_form_factor",
    "pbs_structure_factor",
    "pbs_intensity",
]

#: PbS rock-salt lattice constant at room temperature, Angstrom (Noda et al.,
#: Acta Cryst. B39 (1983) 312, doi:10.1107/S0108768183002451: 5.936 A).
PBS_LATTICE_CONSTANT = 5.936

#: Largest sin(theta)/lambda of the Waasmaier-Kirfel parametrisation, 1/Angstrom.
_WK_STOL_MAX = 6.0


def _import_xraydb():
    """Import xraydb (a runtime dependency) with a clear error if it is missing."""
    try:
        import xraydb
    except ImportError as exc:  # pragma: no cover - xraydb is a declared dependency
        raise ImportError(
            "xmodel.structure_factor needs the 'xraydb' package for f0, f' and f'' tables; "
            "install it with `pip install xraydb`."
        ) from exc
    return xraydb


def _check_energy(xraydb, element: str, energy_kev: float) -> float:
    """Return the energy in eV after checking it lies inside Chantler's table for element."""
    try:
        e_kev = float(energy_kev)
    except (TypeError, ValueError):
        raise ValueError(f"energy_kev must be a number in keV (e.g. 13.8), got {energy_kev!r}.") from None
    if not math.isfinite(e_kev) or e_kev <= 0.0:
        raise ValueError(f"energy_kev must be a positive photon energy in keV (e.g. 13.8), got {energy_kev!r}.")
    e_ev = 1000.0 * e_kev
    table = xraydb.chantler_energies(element)
    if not table[0] <= e_ev <= table[-1]:
        raise ValueError(
            f"energy_kev = {energy_kev} is outside Chantler's table for {element} "
            f"({table[0] / 1000:.3g} to {table[-1] / 1000:.4g} keV). Check that the energy is in "
            f"keV, not eV."
        )
    return e_ev


def atomic_form_factor(element: str, q: np.ndarray, energy_kev: float) -> np.ndarray:
    """Complex atomic scattering factor ``f = f0(q) + f'(E) + i f''(E)``.

    Parameters
    ----------
    element
        Element symbol of a neutral atom, e.g. ``"Pb"``, ``"S"`` (case-insensitive).
    q
        Scattering vector magnitudes ``|q| = 4 pi sin(theta) / lambda``, 1/Angstrom, any shape,
        ``0 <= q <= 24 pi`` (Waasmaier-Kirfel range).
    energy_kev
        Photon energy, keV (the experiment: 13.8 keV, lambda = 0.898 A).

    Returns
    -------
    numpy.ndarray
        complex128, same shape as ``q``, electrons.

    Raises
    ------
    ValueError
        Unknown element, ``q`` negative, non-finite or beyond ``24 pi`` 1/A, or an energy
        outside Chantler's table.

    Notes
    -----
    ``f0`` from Waasmaier & Kirfel (1995), doi:10.1107/S0108767394013292, evaluated at
    ``sin(theta)/lambda = q / (4 pi)``; ``f'``, ``f''`` from Chantler (2000),
    doi:10.1063/1.1321055, independent of ``q`` (dipole approximation). Neutral atoms; no
    Debye-Waller factor.

    Validation
    ----------
    ``f0(0) = Z``; Pb ``f'`` strongly negative and ``f''`` jumping across the L3 edge
    (13.035 keV); ``|F111|^2 / |F200|^2`` of PbS against periodictable (Henke f1, f2) in
    ``tests/xmodel/test_structure_factor.py``.
    """
    xraydb = _import_xraydb()
    try:
        xraydb.atomic_number(element)
    except (ValueError, TypeError, AttributeError):
        raise ValueError(
            f"Unknown element {element!r}: pass a neutral element symbol such as 'Pb' or 'S' "
            f"(ions like 'Pb2+' have no f', f'' table)."
        ) from None
    q_arr = np.asarray(q, dtype=np.float64)
    q_limit = 4.0 * math.pi * _WK_STOL_MAX
    if not np.all(np.isfinite(q_arr)) or np.any(q_arr < 0.0) or np.any(q_arr > q_limit):
        bad = q_arr[~np.isfinite(q_arr) | (q_arr < 0.0) | (q_arr > q_limit)]
        raise ValueError(
            f"q must be finite and within 0..{q_limit:.1f} 1/A (the Waasmaier-Kirfel f0 range), "
            f"got {bad[:4].tolist()}. q is |q| = 4 pi sin(theta)/lambda in 1/Angstrom."
        )
    e_ev = _check_energy(xraydb, element, energy_kev)
    f0 = np.asarray(xraydb.f0(element, q_arr.reshape(-1) / (4.0 * math.pi)), dtype=np.float64)
    f1 = float(np.squeeze(xraydb.f1_chantler(element, e_ev)))
    f2 = float(np.squeeze(xraydb.f2_chantler(element, e_ev)))
    return (f0.reshape(q_arr.shape) + f1) + 1j * f2


def pbs_structure_factor(hkl: np.ndarray, energy_kev: float, a: float = PBS_LATTICE_CONSTANT) -> np.ndarray:
    """Structure factor of rock-salt PbS per reflection.

    Parameters
    ----------
    hkl
        Integer Miller indices of the atomic lattice, shape ``(N, 3)`` (or ``(3,)``).
    energy_kev
        Photon energy, keV.
    a
        PbS lattice constant, Angstrom (default 5.936 A).

    Returns
    -------
    numpy.ndarray
        complex128, shape ``(N,)`` (or scalar shape for one ``hkl``), electrons per
        conventional cell: ``4 (f_Pb + f_S)`` for h, k, l all even, ``4 (f_Pb - f_S)`` for all
        odd, 0 for mixed parity; ``f`` evaluated at ``|q| = |G_hkl|``.

    Notes
    -----
    Pb on the fcc sites (000), S shifted by (1/2 1/2 1/2):
    ``F = sum_j f_j exp(2 pi i hkl . r_j) = [f_Pb + f_S (-1)^(h+k+l)] * F_fcc`` with
    ``F_fcc = 4`` for unmixed, 0 for mixed parity (Warren,
    X-ray Diffraction, Dover 1990, ch. 4). No Debye-Waller factor.

    Validation
    ----------
    ``|F111|^2 / |F200|^2`` at 13.8 keV against an independent periodictable calculation;
    mixed-parity reflections are exactly 0 (``tests/xmodel/test_structure_factor.py``).
    """
    arr = _as_hkl(hkl)
    if arr.ndim > 2:
        raise ValueError(f"hkl must have shape (N, 3) or (3,), got shape {arr.shape}.")
    a = _check_positive(a, "a", "the PbS lattice constant in Angstrom, 5.936")
    q = q_of(arr, a)
    f_pb = atomic_form_factor("Pb", q, energy_kev)
    f_s = atomic_form_factor("S", q, energy_kev)
    parity = np.mod(arr, 2)
    all_even = np.all(parity == 0, axis=-1)
    all_odd = np.all(parity == 1, axis=-1)
    return np.where(all_even, 4.0 * (f_pb + f_s), np.where(all_odd, 4.0 * (f_pb - f_s), 0.0 + 0.0j))


def pbs_intensity(hkl: np.ndarray, energy_kev: float, a: float = PBS_LATTICE_CONSTANT) -> np.ndarray:
    """Squared structure factor ``|F_hkl|^2`` of PbS per reflection.

    Parameters
    ----------
    hkl
        Integer Miller indices, shape ``(N, 3)``.
    energy_kev
        Photon energy, keV.
    a
        PbS lattice constant, Angstrom.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(N,)``, electrons^2 per conventional cell (no Lorentz, polarization
        or multiplicity factors; those belong to the pattern/geometry).

    Notes
    -----
    ``|F|^2 = F F*`` of :func:`pbs_structure_factor`.

    Validation
    ----------
    As :func:`pbs_structure_factor`.
    """
    f = pbs_structure_factor(hkl, energy_kev, a)
    return (f.real**2 + f.imag**2).astype(np.float64)
