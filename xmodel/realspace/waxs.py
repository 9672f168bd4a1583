"""Wide-angle scattering of nanocrystals as finite rock-salt crystals of their own shape.

Every NC is a PbS crystal (rock salt, a = 5.936 A) cut to a sphere of its own radius R.
Near a reciprocal lattice vector G its amplitude is ``F_G / v_c * S(q - U G)`` with ``U`` the
NC's orientation (crystal -> lab), ``v_c = a^3`` the cubic cell and ``S`` the shape transform
of the sphere, ``S(p) = V Phi(|p| R)`` (the Fourier transform of the sphere's indicator;
Guinier, X-ray Diffraction (1963), ch. 5; Warren, X-ray Diffraction (1969), ch. 13). NCs are
not coherent with each other at atomic resolution, so their intensities add:
``I(q) = sum_j sum_G |F_G|^2 V_j^2 Phi(|q - U_j G| R_j)^2 / v_c^2``.

The orientations ``U_j = R_SL R_OR W_j`` are *sampled*: ``W_j`` is a rotation with a
Gaussian rotation vector of standard deviation ``dPhi / 2.3548`` (dPhi the disorder FWHM of
the paper's Eq. 7), about the ideal relationship ``R_OR`` (Conf1 or Conf2). The structure
factor is computed here from xraydb's tables: ``F = 4 (f_Pb + f_S)`` for h, k, l all even,
``4 (f_Pb - f_S)`` all odd, ``f = f0(q) + f' + i f''`` (Waasmaier & Kirfel (1995) f0,
Chantler (2000) f', f'').

Cost. Each (NC, G) pair whose G lies within ``cutoff`` of some WAXS point is evaluated on
the points of that ball only (a k-d tree over the points' q). Points are a binned copy of
the detector (the shape transform of a 68 A NC is ~0.13 1/A wide, 25 binned pixels of 4 x 4)
and the result is interpolated to full pixels by the caller.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.spatial import cKDTree

from xmodel.realspace.particles import sphere_amplitude, sphere_volume

__all__ = ["WaxsPoints", "nc_intensity", "rock_salt_hkl", "rock_salt_intensity"]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def rock_salt_hkl(a: float, q_max: float) -> np.ndarray:
    """(N, 3) int rock-salt reflections (h, k, l all even or all odd, not 000) with |G| <= q_max."""
    n = int(math.floor(q_max * a / (2 * math.pi))) + 1
    out = []
    for h, k, l in itertools.product(range(-n, n + 1), repeat=3):
        par = {h % 2, k % 2, l % 2}
        if (h, k, l) != (0, 0, 0) and len(par) == 1 and 2 * math.pi * math.sqrt(h * h + k * k + l * l) / a <= q_max:
            out.append((h, k, l))
    return np.array(out, dtype=int).reshape(-1, 3)


def rock_salt_intensity(hkl: np.ndarray, a: float, energy_kev: float, cation: str = "Pb",
                        anion: str = "S") -> np.ndarray:
    """``|F_hkl|^2`` (electrons^2) of a rock-salt crystal at the beam energy.

    Notes
    -----
    ``F = 4 (f_c + f_a)`` (all even), ``4 (f_c - f_a)`` (all odd) with ``f = f0(sin theta /
    lambda) + f'(E) + i f''(E)`` from xraydb (Waasmaier & Kirfel, Acta Cryst. A51, 416 (1995);
    Chantler, J. Phys. Chem. Ref. Data 29, 597 (2000)); neutral atoms, no Debye-Waller factor.
    """
    import xraydb

    hkl = np.asarray(hkl, int)
    q = 2 * math.pi * np.sqrt(np.sum(hkl ** 2, axis=1)) / a
    e_ev = 1000.0 * energy_kev

    def f(el):
        f0 = np.asarray(xraydb.f0(el, q / (4 * math.pi)), float)
        f1 = float(np.squeeze(xraydb.f1_chantler(el, e_ev)))
        return f0 + f1 + 1j * float(np.squeeze(xraydb.f2_chantler(el, e_ev)))

    even = np.all(hkl % 2 == 0, axis=1)
    amp = np.where(even, 4 * (f(cation) + f(anion)), 4 * (f(cation) - f(anion)))
    return np.abs(amp) ** 2


class WaxsPoints:
    """The WAXS points (lab-frame q, 1/A) and a k-d tree over them."""

    def __init__(self, q_lab: np.ndarray):
        self.q_lab = np.asarray(q_lab, float)
        self.tree = cKDTree(self.q_lab)
        qabs = np.linalg.norm(self.q_lab, axis=1)
        self.q_range = (float(qabs.min()), float(qabs.max())) if qabs.size else (0.0, 0.0)

    @property
    def size(self) -> int:
        return int(self.q_lab.shape[0])


def nc_intensity(points: WaxsPoints, orientations: np.ndarray, radii: np.ndarray, hkl: np.ndarray,
                 f2: np.ndarray, a: float, cutoff: float) -> np.ndarray:
    """``sum_j sum_G |F_G|^2 V_j^2 Phi(|q - U_j G| R_j)^2 / v_c^2`` at the points (module docstring).

    Parameters
    ----------
    points
        WAXS points.
    orientations, radii
        (M, 3, 3) NC orientations (crystal -> lab) and (M,) radii (A).
    hkl, f2
        (N_G, 3) reflections and their ``|F|^2`` (electrons^2).
    a
        Atomic lattice constant (A).
    cutoff
        Only points within ``cutoff`` (1/A) of ``U_j G`` are evaluated (the shape transform is
        below ``(9 / (cutoff R)^4)`` of its centre beyond).

    Returns
    -------
    numpy.ndarray
        (P,) intensity in electrons^2 (the amplitude ``F_G V / v_c`` counts the electrons of
        the ``V / v_c`` cells of the NC).
    """
    out = np.zeros(points.size)
    g = (2 * math.pi / a) * np.asarray(hkl, float)                # (N_G, 3) crystal frame
    gabs = np.linalg.norm(g, axis=1)
    lo, hi = points.q_range
    near = (gabs >= lo - cutoff) & (gabs <= hi + cutoff)
    g, f2 = g[near], np.asarray(f2, float)[near]
    if g.size == 0:
        return out
    vc2 = a ** 6
    vol = sphere_volume(radii)
    g_lab = np.einsum("mij,gj->mgi", orientations, g)             # (M, N_G, 3)
    flat = g_lab.reshape(-1, 3)
    hits = points.tree.query_ball_point(flat, r=cutoff)
    for idx, found in enumerate(hits):
        if not found:
            continue
        j, k = divmod(idx, g.shape[0])
        found = np.asarray(found)
        dq = np.linalg.norm(points.q_lab[found] - flat[idx], axis=1)
        out[found] += f2[k] * vol[j] ** 2 * sphere_amplitude(dq * radii[j]) ** 2 / vc2
    return out
