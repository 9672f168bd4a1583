"""What a real frame carries besides the sample: membrane and air scattering, shadows,
parasitic scattering, flux drift and bad pixels.

All shapes are per unit of the pixel weight (solid angle x polarization) unless said
otherwise, and normalised so that the configured level is reached at a stated reference.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import expit

__all__ = ["air_scattering", "bad_pixels", "beamstop_transmission", "flux_factors", "membrane_scattering",
           "parasitic_streak"]


def _f0(element: str, q: np.ndarray) -> np.ndarray:
    import xraydb

    return np.asarray(xraydb.f0(element, np.asarray(q, float) / (4 * math.pi)), float)


def _sinc(x: np.ndarray) -> np.ndarray:
    return np.sinc(np.asarray(x) / math.pi)


def membrane_scattering(q: np.ndarray, bond_A: float = 1.73, sigma_A: float = 0.08,
                        density_g_cm3: float = 3.1, s0: float = 0.05) -> np.ndarray:
    """Scattering of amorphous Si3N4 per formula unit (electrons^2).

    Parameters
    ----------
    q
        |q| (1/A).
    bond_A
        Si-N bond length (A): 1.73 A in amorphous and crystalline Si3N4.
    sigma_A
        rms spread of the bond length (A; thermal and static disorder).
    density_g_cm3
        Mass density (g/cm^3; 3.1 for LPCVD silicon nitride membranes).
    s0
        Forward scattering relative to the independent atoms, ``I(0) / sum f^2`` (a dense
        amorphous solid scatters little at q -> 0: its compressibility is small).

    Notes
    -----
    Debye scattering equation (Debye, Ann. Phys. 351, 809 (1915); Warren, X-ray Diffraction
    (1969), ch. 10) with three terms: the independent atoms ``3 f_Si^2 + 4 f_N^2``; the first
    coordination shell, each Si bonded to four N (12 Si-N bonds per Si3N4),
    ``24 f_Si f_N sin(qd)/(qd) exp(-q^2 sigma^2 / 2)``; and the uniform density beyond it, a
    correlation hole of radius ``r_c`` around every formula unit,
    ``-(sum f)^2 rho (4 pi / 3) r_c^3 Phi(q r_c)`` (Warren ch. 10, the density term), with
    ``r_c`` set by the number density ``rho`` so that ``I(0) = s0 sum f^2``. The result is a
    low forward scattering rising to a broad halo near q ~ 2 pi / d. f0 from xraydb (Waasmaier
    & Kirfel 1995). Compton scattering is not included; clipped at 0.
    """
    q = np.asarray(q, float)
    fs, fn = _f0("Si", q), _f0("N", q)
    fs0, fn0 = _f0("Si", np.zeros(1))[0], _f0("N", np.zeros(1))[0]
    rho = density_g_cm3 / (3 * 28.086 + 4 * 14.007) * 6.02214076e23 * 1e-24     # formula units per A^3
    self0 = 3 * fs0 ** 2 + 4 * fn0 ** 2
    hole = (self0 + 24 * fs0 * fn0 - s0 * self0) / (3 * fs0 + 4 * fn0) ** 2       # rho (4 pi / 3) r_c^3
    r_c = (3 * hole / (4 * math.pi * rho)) ** (1.0 / 3.0)
    x = q * r_c
    xs = np.where(x < 1e-3, 1.0, x)
    phi = np.where(x < 1e-3, 1.0 - x * x / 10, 3 * (np.sin(xs) - xs * np.cos(xs)) / xs ** 3)
    out = (3 * fs ** 2 + 4 * fn ** 2 + 24 * fs * fn * _sinc(q * bond_A) * np.exp(-0.5 * (q * sigma_A) ** 2)
           - hole * (3 * fs + 4 * fn) ** 2 * phi)
    return np.maximum(out, 0.0)


def air_scattering(q: np.ndarray) -> np.ndarray:
    """Scattering of air per molecule (electrons^2): N2 and O2 as rigid diatomics, 78:21.

    Notes
    -----
    Debye equation for a diatomic molecule, ``2 f^2 (1 + sin(q d)/(q d))`` with d = 1.098 A
    (N2) and 1.208 A (O2) (Warren (1969), ch. 10; bond lengths from the NIST CCCBDB); Ar and
    Compton scattering are left out.
    """
    q = np.asarray(q, float)
    fn, fo = _f0("N", q), _f0("O", q)
    return (0.78 * 2 * fn ** 2 * (1 + _sinc(q * 1.098)) + 0.21 * 2 * fo ** 2 * (1 + _sinc(q * 1.208))) / 0.99


def beamstop_transmission(shape: tuple[int, int], center_px: tuple[float, float], radius_px: float,
                          holder_width_px: float, holder_angle_deg: float, edge_px: float) -> np.ndarray:
    """Transmission (0..1) of a round beamstop and its holder strip with soft (penumbral) edges.

    Notes
    -----
    A logistic edge of width ``edge_px`` (the penumbra of an object a few cm before the
    detector lit by a divergent, focused beam): ``T = sigma((r - radius) / edge)`` for the
    disc and ``sigma((|v x d| - w / 2) / edge)`` across the holder, ``v . d >= 0`` along it,
    with ``d`` the holder direction measured like `xmodel.detector.beamstop_mask`.
    """
    rows, cols = shape
    dr = np.arange(rows, dtype=float)[:, None] - center_px[0]
    dc = np.arange(cols, dtype=float)[None, :] - center_px[1]
    edge = max(float(edge_px), 1e-6)
    t = expit((np.hypot(dr, dc) - radius_px) / edge)
    if holder_width_px > 0:
        a = math.radians(holder_angle_deg)
        along = dr * math.sin(a) + dc * math.cos(a)
        across = np.abs(dr * math.cos(a) - dc * math.sin(a))
        holder = expit((across - 0.5 * holder_width_px) / edge)
        t = t * np.where(along >= 0, holder, 1.0)
    return t


def parasitic_streak(shape: tuple[int, int], center_px: tuple[float, float], angle_deg: float,
                     width_px: float, length_px: float) -> np.ndarray:
    """Shape (peak 1) of a parasitic streak from the beam-defining slits through the beam centre.

    Notes
    -----
    Slit-edge scattering is a thin fan along the direction normal to the edge (Guinier &
    Fournet (1955), ch. 4): Gaussian across (``width_px`` sigma), Lorentzian-squared decay
    ``(1 + (s / length)^2)^-1`` along, on both sides of the beam; ``angle_deg`` measured like
    the holder angle (0 = +col, 90 = +row).
    """
    rows, cols = shape
    dr = np.arange(rows, dtype=float)[:, None] - center_px[0]
    dc = np.arange(cols, dtype=float)[None, :] - center_px[1]
    a = math.radians(angle_deg)
    along = dr * math.sin(a) + dc * math.cos(a)
    across = dr * math.cos(a) - dc * math.sin(a)
    return np.exp(-0.5 * (across / width_px) ** 2) / (1.0 + (along / length_px) ** 2)


def flux_factors(rng: np.random.Generator, n_frames: int, amplitude: float, period_frames: float,
                 jitter: float) -> np.ndarray:
    """(n_frames,) incident-flux factors: a slow drift (storage-ring decay and refill, beam motion).

    ``1 + amplitude sin(2 pi i / period + phi) + jitter * N(0, 1)``, clipped to >= 0.05; the
    phase phi is random. Recorded in the truth file: the frames are not normalised.
    """
    i = np.arange(n_frames)
    phase = rng.uniform(0, 2 * math.pi)
    f = 1.0 + amplitude * np.sin(2 * math.pi * i / max(period_frames, 1e-9) + phase)
    f = f + jitter * rng.standard_normal(n_frames)
    return np.clip(f, 0.05, None)


def bad_pixels(rng: np.random.Generator, valid: np.ndarray, n_hot: int, n_dead: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of hot and dead pixels drawn among the valid (unmasked) pixels."""
    idx = rng.choice(np.flatnonzero(np.asarray(valid).reshape(-1)), size=n_hot + n_dead, replace=False)
    return idx[:n_hot], idx[n_hot:]
