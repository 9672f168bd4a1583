"""Angular signatures of SL shells for zone axes: the template bank of the orientation search.

A template is a zone axis ``b`` (an SL crystal direction along the beam) with the orientation
``R0 = base_orientation(b)`` at zero in-plane angle; its *angular signature* is, for each of the
strongest SL shells ``n2 = h^2 + k^2 + l^2``, the intensity along the ring ``|q| = |G|`` on the
Ewald sphere as a function of chi. A rotation by ``phi`` about the beam (``R = R_e3(phi) R0``)
only shifts these ring profiles along chi, ``I_phi(chi) = I_0(chi + phi)`` (the Ewald sphere is
symmetric about the beam), so `fits.scan.search` finds the in-plane angle of each template by one FFT
cross-correlation along chi. Beam directions cover the quarter cube face ``z >= x >= 0,
z >= y >= 0`` (1/24 of the sphere: the directions modulo the 24 proper cubic rotations) on a
Fibonacci lattice of the requested spacing (`zone_axis_grid`).

Holds: the zone-axis grid, the fcc shell members, the Ewald ring geometry (`ring_directions`,
`ewald_angle`), the signatures (`shell_signatures`), the vectorised base orientations, the chi
grid check and the (npz-cached) `TemplateBank` (`build_template_bank`). The frame side
(lattice-constant candidates, ring profiles, correlation, refinement) is `fits.scan.search`, which
re-exports every public name of this module.

Conventions: chi is pyFAI's azimuth (deg), ``chi = atan2(q1, q2)``; orientations are SL
crystal -> lab (docs/conventions.md). Everything here is numpy (float64 for geometry, float32
for the stored signatures). Contractions are einsums, not matmuls: the many small
multi-threaded OpenBLAS GEMMs of a batched matmul stall for seconds on a loaded 2-core machine.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TWO_PI = 2.0 * np.pi

#: SL shells (h^2 + k^2 + l^2 of fcc reflections) used for the angular signatures
DEFAULT_SHELLS = (3, 4, 8, 11, 12, 16, 19, 20, 24)
#: chi grids must be regular and span 360 deg to this tolerance (deg)
_CHI_TOL = 1e-6
#: `shell_signatures` drops Gaussian terms whose exponent exceeds this (exp(-36) ~ 2e-16)
_EXPONENT_CUT = 36.0


@dataclass(frozen=True, eq=False)
class TemplateBank:
    """Angular signatures of the SL shells for a set of zone axes at zero in-plane angle.

    Attributes
    ----------
    zone_axes : (K, 3) unit SL crystal directions along the beam.
    bases : (K, 3, 3) ``R0 = base_orientation(zone_axis)`` (SL crystal -> lab).
    shells : (S,) ``h^2 + k^2 + l^2`` of the shells.
    chi_deg : (C,) the regular chi grid spanning 360 deg (deg).
    signatures : (K, S, C) float32, compressed ring intensities (``sqrt`` of a sum of unit
        Gaussians in the angle between ``R0 G`` and the ring point).
    key : dict of the parameters the bank was built with (the cache key).
    """

    zone_axes: np.ndarray
    bases: np.ndarray
    shells: np.ndarray
    chi_deg: np.ndarray
    signatures: np.ndarray
    key: dict

    @property
    def size(self) -> int:
        return int(self.zone_axes.shape[0])

    def spectra(self) -> tuple[np.ndarray, np.ndarray]:
        """rfft along chi of the signatures and of their squares, (K, S, C//2 + 1) complex64."""
        return (np.fft.rfft(self.signatures, axis=-1).astype(np.complex64),
                np.fft.rfft(self.signatures ** 2, axis=-1).astype(np.complex64))


def zone_axis_grid(step_deg: float) -> np.ndarray:
    """Unit directions covering the sphere modulo the 24 proper cubic rotations.

    Parameters
    ----------
    step_deg : spacing of the directions (deg), between 0.25 and 20.

    Returns
    -------
    numpy.ndarray, shape (K, 3)
        Directions with ``z >= x >= 0`` and ``z >= y >= 0`` (within a margin of half a step, so
        the region's edges are covered), from a Fibonacci sphere of about ``4 pi / step^2`` points.

    Notes
    -----
    The stabiliser of a cube face in the rotation group 432 is the 4-fold axis through it, so a
    quarter of one face is a fundamental region for directions (1/24 of the sphere). Fibonacci
    lattice: Gonzalez, Math. Geosci. 42, 49 (2010), doi:10.1007/s11004-009-9257-x.

    Validation: every random direction has a symmetric copy within ``step_deg`` of the grid
    (tests/fits/scan/test_templates.py).
    """
    step = float(step_deg)
    if not np.isfinite(step) or not 0.25 <= step <= 20.0:
        raise ValueError(f"zone_axis_grid: step_deg must be between 0.25 and 20 degrees, got "
                         f"{step_deg!r}; 1 to 2 degrees is a good template spacing.")
    h = np.radians(step)
    n = int(np.ceil(4.0 * np.pi / h ** 2))
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = np.pi * (1.0 + 5.0 ** 0.5) * i
    r = np.sqrt(1.0 - z * z)
    d = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    m = 0.5 * h
    keep = (d[:, 2] > 0) & (d[:, 0] >= -m) & (d[:, 1] >= -m) & (d[:, 2] - d[:, 0] >= -m) & (d[:, 2] - d[:, 1] >= -m)
    return d[keep]


def shell_members(shell: int) -> np.ndarray:
    """(M, 3) unit directions of the fcc reflections with ``h^2 + k^2 + l^2 = shell``."""
    n = int(np.ceil(np.sqrt(shell)))
    r = np.arange(-n, n + 1)
    hkl = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    par = hkl % 2
    fcc = np.all(par == par[:, :1], axis=1)
    sel = hkl[fcc & (np.sum(hkl ** 2, axis=1) == shell)]
    if sel.size == 0:
        raise ValueError(f"shell_members: no fcc reflection has h^2 + k^2 + l^2 = {shell}; valid "
                         f"shells are e.g. {DEFAULT_SHELLS}.")
    return sel / np.sqrt(shell)


def ring_directions(q: float, chi_deg: np.ndarray, wavelength_A: float) -> np.ndarray:
    """Unit vectors of the scattering vectors of modulus ``q`` on the Ewald sphere at ``chi``.

    Notes
    -----
    ``q = k_f - k_i`` with ``|k| = 2 pi / lambda``: ``q_hat = (cos a sin chi, cos a cos chi,
    -sin a)``, ``sin a = q / (2 k)`` (docs/conventions.md, pyFAI's chi = atan2(q1, q2)).
    """
    k = TWO_PI / wavelength_A
    a = np.arcsin(min(q / (2.0 * k), 1.0))
    c = np.radians(chi_deg)
    return np.stack([np.cos(a) * np.sin(c), np.cos(a) * np.cos(c), np.full(c.shape, -np.sin(a))], -1)


def ewald_angle(q: np.ndarray, wavelength_A: float) -> np.ndarray:
    """Angle ``a`` (rad) of the scattering vector of modulus ``q`` (1/A) below the detector plane.

    ``sin a = q / (2 k)``, ``k = 2 pi / lambda`` (`ring_directions`); clipped at 90 deg.
    """
    return np.arcsin(np.minimum(np.asarray(q, float) / (2.0 * TWO_PI / wavelength_A), 1.0))


def shell_signatures(bases: np.ndarray, alpha: np.ndarray, chi_deg: np.ndarray, sigma: float | np.ndarray,
                     shells: tuple[int, ...] | np.ndarray) -> np.ndarray:
    """Ring signatures ``sqrt(sum_G exp(-(1 - u_G . q_hat(chi)) / sigma^2))`` of every orientation.

    Parameters
    ----------
    bases : (D, 3, 3) orientations (SL crystal -> lab).
    alpha : (D, S) `ewald_angle` of each shell's ring for each orientation (rad).
    chi_deg : (C,) regular chi grid over 360 deg (deg, pyFAI chi).
    sigma : angular sigma of the SL peaks (rad), one for all shells or (S,) one per shell.
    shells : (S,) SL shells ``h^2 + k^2 + l^2``; ``u_G`` runs over `shell_members` in the lab.

    Returns
    -------
    numpy.ndarray, shape (D, S, C), float64

    Notes
    -----
    With ``q_hat(chi) = (cos a sin chi, cos a cos chi, -sin a)`` (`ring_directions`),
    ``u . q_hat = cos a r_u cos(chi - chi_u) - u_z sin a`` with ``r_u = hypot(u_x, u_y)`` and
    ``chi_u = atan2(u_x, u_y)``, so the exponent exceeds ``E = 36`` outside
    ``|chi - chi_u| <= acos((1 + u_z sin a - E sigma^2) / (cos a r_u))``. Each member is evaluated
    only on the bins of that window (exactly, float64) and scatter-added; members that never come
    within it are skipped. The dropped terms are below ``exp(-36) = 2e-16`` each.

    Validation: squared, equals the direct sum over all members and chi bins to 1e-14 (rtol 1e-12),
    also for windows spanning the full circle and a 4 A wavelength (tests/fits/scan/test_templates.py).
    """
    chi = np.asarray(chi_deg, float).reshape(-1)
    C = chi.size
    step = check_chi_grid(chi)
    shells = np.asarray(shells, int).reshape(-1)
    S = shells.size
    bases = np.asarray(bases, float).reshape(-1, 3, 3)
    D = bases.shape[0]
    members = [shell_members(int(s)) for s in shells]
    shell_of = np.repeat(np.arange(S), [g.shape[0] for g in members])
    u = np.einsum("dij,mj->dmi", bases, np.concatenate(members))         # (D, M, 3) lab
    alpha = np.broadcast_to(np.asarray(alpha, float), (D, S))[:, shell_of]
    sigma = np.broadcast_to(np.asarray(sigma, float), (S,))[shell_of]                # (M,) per member
    sa, ca = np.sin(alpha), np.cos(alpha)
    r = np.hypot(u[..., 0], u[..., 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = (1.0 + u[..., 2] * sa - _EXPONENT_CUT * sigma[None, :] ** 2) / (ca * r)
    d_i, m_i = np.nonzero(kappa < 1.0)        # r_u = 0: -inf (a member on the beam axis) or skipped
    out = np.zeros(D * S * C)
    if d_i.size:
        half = np.degrees(np.arccos(np.clip(kappa[d_i, m_i], -1.0, 1.0)))
        ux, uy, uz = (u[d_i, m_i, i][:, None] for i in range(3))
        j0 = np.rint((np.degrees(np.arctan2(ux[:, 0], uy[:, 0])) - chi[0]) / step).astype(int)
        w = int(np.ceil(half.max() / step)) + 1
        offs = np.arange(C) - C // 2 if 2 * w + 1 >= C else np.arange(-w, w + 1)
        j = (j0[:, None] + offs[None, :]) % C                                 # (P, L) chi bins
        rad = np.radians(chi)
        cos = ca[d_i, m_i][:, None] * (ux * np.sin(rad)[j] + uy * np.cos(rad)[j]) - uz * sa[d_i, m_i][:, None]
        flat = (d_i * S + shell_of[m_i])[:, None] * C + j
        out = np.bincount(flat.ravel(), weights=np.exp(-(1.0 - cos) / sigma[m_i][:, None] ** 2).ravel(),
                          minlength=D * S * C)
    return np.sqrt(out.reshape(D, S, C))


def base_orientations(beam_directions: np.ndarray) -> np.ndarray:
    """`xmodel.orientation.base_orientation` with the default reference, vectorised.

    Parameters
    ----------
    beam_directions : (D, 3) SL crystal directions along the beam (any length, non-zero).

    Returns
    -------
    numpy.ndarray, shape (D, 3, 3): rows ``(r x b, r, b)``, ``r`` the unit normal component of the
    cube axis most nearly perpendicular to ``b`` (ties to the earlier axis, within 1e-12).

    Notes
    -----
    Gram-Schmidt triad as `xmodel.orientation.base_orientation` (docs/conventions.md).

    Validation: equal to `xmodel.orientation.base_orientation` to 1e-15 (tests/fits/scan/test_templates.py).
    """
    b = np.asarray(beam_directions, float).reshape(-1, 3)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cosines = np.abs(b)
    first = np.argmax(cosines <= cosines.min(axis=1, keepdims=True) + 1e-12, axis=1)
    ref = np.eye(3)[first]
    r = ref - np.sum(ref * b, axis=1, keepdims=True) * b
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    return np.stack([np.cross(r, b), r, b], axis=1)


def check_chi_grid(chi_deg: np.ndarray) -> float:
    """The step (deg) of a regular chi grid spanning 360 deg, or a ValueError."""
    chi = np.asarray(chi_deg, float).reshape(-1)
    if chi.size < 8:
        raise ValueError(f"the chi grid has {chi.size} bins; the orientation search needs a regular "
                         f"grid over 360 deg with at least 8 bins (e.g. 360 bins of 1 deg, "
                         f"/entry/reduction/chi).")
    d = np.diff(chi)
    step = 360.0 / chi.size
    if np.max(np.abs(d - step)) > 1e-4 * step + _CHI_TOL:
        raise ValueError(f"the chi grid ({chi[0]:g} .. {chi[-1]:g} deg, {chi.size} bins) is not "
                         f"regular over 360 deg (steps {d.min():g} .. {d.max():g} deg); the orientation "
                         f"search correlates along a full circle: reduce with chi_range=(-180, 180).")
    return step


def build_template_bank(chi_deg: np.ndarray, *, wavelength_A: float, lattice_constant: float,
                        step_deg: float, mosaic_deg: float = 1.0, size_sigma: float = 0.0,
                        shells: tuple[int, ...] = DEFAULT_SHELLS, cache_dir: str | Path | None = None
                        ) -> TemplateBank:
    """Angular signatures of every zone axis of `zone_axis_grid` (cached as npz if asked).

    Parameters
    ----------
    chi_deg : (C,) regular chi grid over 360 deg (deg, pyFAI chi), as in the polar images.
    wavelength_A : X-ray wavelength (A).
    lattice_constant : nominal SL lattice constant (A, the config's); only sets the Ewald offset
        of each ring.
    step_deg : spacing of the zone axes (deg, `fits.scan.settings.SearchSettings.step_deg`).
    mosaic_deg : angular sigma of the SL peaks (deg); widened by half the step so that a
        direction between two templates still overlaps both.
    size_sigma : isotropic (size) sigma of the SL peaks (1/A) of the "crystal" peak shape
        (`xmodel.pattern.sl_peak_widths`): shell ``s`` at ``|G_s| = 2 pi sqrt(s) / a`` gets the angular
        sigma ``hypot(mosaic, size_sigma / |G_s|)``; 0 (the "mosaic" shape) leaves one sigma for all.
    shells : SL shells ``h^2 + k^2 + l^2``.
    cache_dir : folder for ``templates-<hash>.npz``; reused when the parameters agree.

    Notes
    -----
    Signature of shell ``s`` at chi: ``sqrt(sum_G exp(-(1 - u_G . q_hat(chi)) / sigma^2))``, the
    small-angle form of a Gaussian of sigma ``sigma`` in the angle between ``u_G = R0 G / |G|``
    and the ring direction (the tangential SL peak of docs/conventions.md, "Peaks"), evaluated by
    `shell_signatures` near each member's ring crossing only (0.07 s for 810 zone axes x 360 chi
    bins).

    Validation: the in-plane angle and zone axis of forward-model patterns are recovered
    (tests/fits/scan/test_search.py); the npz cache returns the same signatures
    (tests/fits/scan/test_templates.py).
    """
    step_chi = check_chi_grid(chi_deg)
    chi = np.asarray(chi_deg, float).reshape(-1)
    key = {"chi0": round(float(chi[0]), 9), "n_chi": int(chi.size), "wavelength_A": round(float(wavelength_A), 9),
           "lattice_constant": round(float(lattice_constant), 6), "step_deg": float(step_deg),
           "mosaic_deg": float(mosaic_deg), "shells": [int(s) for s in shells], "version": 1}
    if size_sigma > 0:
        key["size_sigma"] = float(size_sigma)
    path = None
    if cache_dir is not None:
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"templates-{digest}.npz"
        if path.exists():
            with np.load(path) as z:
                return TemplateBank(z["zone_axes"], z["bases"], z["shells"], chi, z["signatures"], key)
    zones = zone_axis_grid(step_deg)
    bases = base_orientations(zones)
    g = TWO_PI * np.sqrt(np.asarray(shells, float)) / lattice_constant
    angle = np.hypot(max(mosaic_deg, 0.1), np.degrees(float(size_sigma) / g))    # (S,) deg
    sigma = np.radians(np.hypot(angle, 0.5 * float(step_deg)) + 0.5 * step_chi)
    if size_sigma <= 0:
        sigma = float(sigma[0])
    alpha = ewald_angle(g, wavelength_A)
    sig = np.zeros((zones.shape[0], len(shells), chi.size), np.float32)
    for start in range(0, zones.shape[0], 256):
        sig[start:start + 256] = shell_signatures(bases[start:start + 256], alpha[None, :], chi, sigma, shells)
    bank = TemplateBank(zones, bases, np.asarray(shells, int), chi, sig, key)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, zone_axes=zones, bases=bases, shells=bank.shells, signatures=sig)
    return bank
