"""Nanocrystals as explicit objects: sphere amplitudes, sizes and fcc grains of NC positions.

Everything here is numpy, independent of the Gaussian-peak model (`xmodel.pattern`): the
superlattice (SL) is a set of NC centres and radii, not a list of reflections. Lengths in
Angstrom, wave vectors in 1/Angstrom, rotations as (3, 3) matrices (crystal -> lab, the
convention of docs/conventions.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Grain", "fcc_grain", "random_rotations", "sphere_amplitude", "sphere_volume"]

#: the conventional fcc basis (units of the cubic lattice constant)
FCC_BASIS = np.array([[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])

#: displacement models of the paracrystal (`fcc_grain`)
DISPLACEMENTS = ("gaussian", "cumulative")
#: grain boundaries of `fcc_grain`: a sphere's sharp surface or a Gaussian occupancy profile
EDGES = ("sharp", "gaussian")
#: the "gaussian" edge keeps candidate sites out to this many of its sigmas
EDGE_REACH_SIGMA = 3.5


def sphere_amplitude(x: np.ndarray) -> np.ndarray:
    """Normalised amplitude of a homogeneous sphere, ``Phi(x) = 3 (sin x - x cos x) / x^3``.

    Parameters
    ----------
    x
        ``|q| R`` (dimensionless), any shape.

    Returns
    -------
    numpy.ndarray
        ``Phi(x)``, ``Phi(0) = 1``; below ``|x| = 0.05`` the series ``1 - x^2/10 + x^4/280``.

    Notes
    -----
    Rayleigh (1911); Guinier & Fournet, Small-Angle Scattering of X-rays (1955), Eq. 2.
    The amplitude of a sphere of volume V is ``V Phi(qR)`` (times its contrast), and its
    Fourier transform as a shape function (the shape transform of a spherical crystal) is
    the same function of ``|q - G| R``.
    """
    x = np.asarray(x, dtype=np.float64)
    small = np.abs(x) < 0.05
    xs = np.where(small, 1.0, x)
    closed = 3.0 * (np.sin(xs) - xs * np.cos(xs)) / xs ** 3
    x2 = x * x
    return np.where(small, 1.0 - x2 / 10.0 + x2 * x2 / 280.0, closed)


def sphere_volume(radius: np.ndarray) -> np.ndarray:
    """``4/3 pi R^3`` (A^3)."""
    return (4.0 / 3.0) * np.pi * np.asarray(radius, dtype=np.float64) ** 3


def random_rotations(rng: np.random.Generator, n: int, sigma_rad: float) -> np.ndarray:
    """(n, 3, 3) rotations ``exp([w]_x)`` with rotation vectors ``w ~ N(0, sigma^2 I_3)``.

    Notes
    -----
    Rodrigues' formula. A reciprocal vector G rotated by it moves tangentially by ``|G|
    sigma`` (standard deviation) along each of the two directions normal to G, the spread
    that the paper's Eq. 7 reads from the azimuthal width of a ring (FWHM = 2.3548 sigma).
    """
    w = rng.standard_normal((n, 3)) * sigma_rad
    theta = np.linalg.norm(w, axis=1)
    safe = np.where(theta > 1e-12, theta, 1.0)
    k = w / safe[:, None]
    kx = np.zeros((n, 3, 3))
    kx[:, 0, 1], kx[:, 0, 2] = -k[:, 2], k[:, 1]
    kx[:, 1, 0], kx[:, 1, 2] = k[:, 2], -k[:, 0]
    kx[:, 2, 0], kx[:, 2, 1] = -k[:, 1], k[:, 0]
    s, c = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
    rot = np.eye(3)[None] + s * kx + (1.0 - c) * (kx @ kx)
    rot[theta <= 1e-12] = np.eye(3)
    return rot


@dataclass(frozen=True)
class Grain:
    """One coherent SL grain: NC centres (lab frame, A) and radii (A).

    ``positions`` (N, 3), ``radii`` (N,); ``orientation`` the grain's SL crystal -> lab
    rotation; ``lattice_constant`` its cubic lattice constant (A); ``sites`` (N, 3) the NCs'
    ideal fcc sites in the crystal frame (units of the lattice constant), or None.
    """

    positions: np.ndarray
    radii: np.ndarray
    orientation: np.ndarray
    lattice_constant: float
    sites: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.radii.size)

    def deformation(self) -> np.ndarray:
        """(3, 3) the affine map ``M`` (crystal frame) that best carries the ideal sites onto the
        NC positions: least squares of ``x_j = M (a s_j) + t`` over the grain's NCs.

        ``M = 1`` for an ideal grain; a paracrystal's displacements leave a random strain whose
        size falls with the grain (a cumulative walk over ``n`` planes tilts its least-squares
        line by about ``step / sqrt(n)``). Raises ValueError for a grain without ``sites``.
        """
        if self.sites is None:
            raise ValueError("this grain has no ideal sites (Grain.sites); build it with fcc_grain")
        crystal = self.positions @ self.orientation          # lab -> crystal frame
        design = np.c_[self.sites * self.lattice_constant, np.ones(self.n)]
        coef, *_ = np.linalg.lstsq(design, crystal, rcond=None)
        return coef[:3].T

    def lattice_constant_normal_to(self, direction: np.ndarray) -> float:
        """The cubic lattice constant (A) the grain shows in the plane normal to ``direction``.

        ``a (det(M) |M^-T n|)^(1/2)``, ``M`` the `deformation` and ``n`` the unit ``direction``
        (lab frame) in the crystal frame: the square root of the area ratio of that plane under
        ``M`` (Nanson's formula, ``n da = det(M) M^-T N dA``; e.g. Holzapfel, Nonlinear Solid
        Mechanics (2000), eq. 2.54), so an isotropic strain ``M = (1 + e) 1`` gives ``a (1 + e)``.
        For the beam direction this is the lattice constant of the SL reflections a SAXS frame
        shows: at small q the Ewald sphere is the plane normal to the beam.
        """
        m = self.deformation()
        n = self.orientation.T @ (np.asarray(direction, float) / np.linalg.norm(direction))
        area = np.linalg.det(m) * np.linalg.norm(np.linalg.solve(m.T, n))
        return float(self.lattice_constant * np.sqrt(area))


def fcc_grain(rng: np.random.Generator, *, lattice_constant: float, diameter: float, orientation: np.ndarray,
              radius: float, radius_sigma: float, displacement: float = 0.0,
              displacement_model: str = "gaussian", radius_step: float = 0.25, edge: str = "sharp") -> Grain:
    """A spherical fcc grain of NCs with paracrystalline displacements and random sizes.

    Parameters
    ----------
    rng
        Random generator (positions' disorder and radii).
    lattice_constant
        Cubic SL lattice constant a (A); nearest-neighbour distance ``a / sqrt(2)``.
    diameter
        Grain diameter (A): sites whose ideal position lies within ``diameter / 2`` of the
        grain centre are kept.
    orientation
        (3, 3) SL crystal -> lab rotation of the grain.
    radius, radius_sigma
        Mean NC radius and its Gaussian standard deviation (A); radii are drawn independently
        of the sites (the decoupling assumption), truncated to ``> 0.2 radius`` and rounded to
        multiples of ``radius_step``.
    displacement
        Relative displacement disorder g: the rms displacement per Cartesian component is
        ``g a / sqrt(2)`` (a fraction of the nearest-neighbour distance).
    displacement_model
        ``"gaussian"``: independent displacements of every site about its ideal position
        (thermal-like, Debye-Waller damping ``exp(-q^2 sigma_u^2)``, Bragg peaks stay sharp);
        ``"cumulative"``: an ideal paracrystal along the three cubic axes (Hosemann & Bagchi,
        Direct Analysis of Diffraction by Matter (1962)): every lattice plane of index n along
        axis i is shifted by a random walk of n steps of rms ``g a / sqrt(2)`` from the grain
        centre, so correlations decay with distance and peaks broaden with ``|G|^2``.
    radius_step
        Radii are multiples of this (A): a discretised Gaussian (0.25 A = sigma / 10 for the
        paper's NCs), so that the SAXS sum can group NCs of equal radius (`xmodel.realspace.saxs`).
    edge
        ``"sharp"``: every site within ``diameter / 2`` (a sphere; its shape transform has the
        Porod tails ``|q - G|^-4``). ``"gaussian"``: a grain with a diffuse boundary, each site
        occupied with probability ``exp(-r^2 / 2 s^2)``, ``s = diameter / (2 sqrt 5)``, so that
        its radius of gyration ``sqrt 3 s`` equals the sphere's ``sqrt(3/5) diameter / 2``
        (Guinier & Fournet 1955) and its mean shape transform is a Gaussian without Porod tails
        (sites beyond `EDGE_REACH_SIGMA` s are left out: probability below 0.3 %). It holds a
        third of the sphere's NCs.

    Returns
    -------
    Grain
        Positions about the grain centre (the origin), in the lab frame.

    Raises
    ------
    ValueError
        For an unknown ``displacement_model`` or ``edge``, or a grain smaller than one cell.
    """
    if displacement_model not in DISPLACEMENTS:
        raise ValueError(f"displacement_model {displacement_model!r} is unknown; use one of {list(DISPLACEMENTS)}.")
    if edge not in EDGES:
        raise ValueError(f"edge {edge!r} is unknown; use one of {list(EDGES)}.")
    a = float(lattice_constant)
    half = 0.5 * float(diameter)
    if half < a:
        raise ValueError(f"grain diameter {diameter} A is smaller than two lattice constants ({2 * a} A); "
                         "use a grain of at least a few cells (e.g. 1000-2000 A).")
    s_edge = half / np.sqrt(5.0)
    reach = half if edge == "sharp" else EDGE_REACH_SIGMA * s_edge
    m = int(np.ceil(reach / a)) + 1
    cells = np.arange(-m, m + 1)
    grid = np.stack(np.meshgrid(cells, cells, cells, indexing="ij"), axis=-1).reshape(-1, 3)
    frac = (grid[:, None, :] + FCC_BASIS[None]).reshape(-1, 3)  # units of a
    r2 = np.sum(frac ** 2, axis=1) * a * a
    frac, r2 = frac[r2 <= reach * reach], r2[r2 <= reach * reach]
    if edge == "gaussian":
        frac = frac[rng.random(r2.size) < np.exp(-0.5 * r2 / (s_edge * s_edge))]
    step = displacement * a / np.sqrt(2.0)
    if displacement_model == "gaussian":
        shift = rng.standard_normal(frac.shape) * step
    else:
        # planes at half-integer spacing along each cubic axis: index k = 2 * frac
        idx = np.rint(2 * frac).astype(int)
        shift = np.zeros(frac.shape)
        for axis in range(3):
            lo, hi = idx[:, axis].min(), idx[:, axis].max()
            steps = rng.standard_normal(hi - lo + 1) * step / np.sqrt(2.0)   # half-cell steps
            walk = np.cumsum(steps)
            walk -= walk[-lo]                                             # zero at the centre
            shift[:, axis] = walk[idx[:, axis] - lo]
    crystal = frac * a + shift
    radii = radius + radius_sigma * rng.standard_normal(crystal.shape[0])
    radii = np.maximum(radii, 0.2 * radius)
    if radius_step > 0:
        radii = np.maximum(np.rint(radii / radius_step), 1.0) * radius_step
    return Grain(positions=crystal @ np.asarray(orientation, float).T, radii=radii,
                 orientation=np.asarray(orientation, float), lattice_constant=a, sites=frac)
