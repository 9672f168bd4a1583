"""Render a twin scan with the real-space simulator: frames and ground truth.

The twin's layout (`xmodel.twin`: domains, boundaries, overlaps, holes, the beam footprint)
decides what is in the beam at every scan point: up to two components, each with its area
fraction, SL lattice constant, orientation (domain base, in-plane angle, boundary tilt) and
the domain's NC configuration and disorder. The expected frame is then built from explicit
objects, not from the Gaussian-peak model:

* SAXS: ``count`` grains per component (fewer for a minor component), each a spherical
  fcc grain of NCs (`xmodel.realspace.particles.fcc_grain`) rotated from the component's SL
  orientation by a random rotation of ``mosaic_deg``, summed coherently over its NCs on the
  pixels with ``|q| <= q_max`` (`xmodel.realspace.saxs`) and incoherently over grains; beyond
  ``q_max`` up to ``q_max_incoherent`` the grains' incoherent NC scattering; plus the
  disordered NCs, ``efficiency.diffuse * P(q)`` with ``P`` their own size average.
* WAXS: ``sampled`` NCs per component, orientations drawn about the Conf1/Conf2 relationship
  with the domain's disorder, radii from its size distribution, each a spherical PbS crystal
  (`xmodel.realspace.waxs`), on a binned copy of the detector interpolated to full pixels.
* Nuisances (`xmodel.realspace.nuisance`): Si3N4 membrane and air, a soft beamstop and holder
  shadow, a parasitic streak, a flux drift between frames, hot and dead pixels, Poisson counts.

Scale. The twin's efficiencies set the counts through the *integrated* intensity of a
reflection, which both descriptions share: a perfect lattice of N NCs gives
``N (2 pi)^3 / v_c |<F>|^2`` per reflection (v_c = a^3 / 4), the Gaussian model
``sl_scale B (2 pi)^(3/2) sigma_r sigma_t^2``; the simulator's scale is chosen so that the
two agree at 200_SL for the domain's widths (and likewise at 200_AL:
``|F|^2 V (2 pi)^3 / v_c^2`` per NC against ``al_scale (2 pi)^(3/2) sigma_s sigma_t^2``).
Peak heights then differ where the shapes differ, which is the point.
"""
from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from xmodel import orientation
from xmodel.experiment import Experiment, beam_center_px
from xmodel.realspace import nuisance
from xmodel.realspace.particles import Grain, fcc_grain, random_rotations, sphere_amplitude
from xmodel.realspace.saxs import SaxsPoints, grain_intensity
from xmodel.realspace.settings import RealspaceSettings, load_settings
from xmodel.realspace.waxs import FWHM_PER_SIGMA, WaxsPoints, nc_intensity, rock_salt_hkl, rock_salt_intensity
from xmodel.twin import TwinSample, components, load_twin, point_truth

__all__ = ["ComponentDraw", "RealspaceScan", "grain_orientations", "synthesize_realspace"]

log = logging.getLogger(__name__)

TWO_PI = 2.0 * math.pi

#: frame fact and truth dataset of the grains' in-plane lattice constant
#: (`ComponentDraw.grain_lattice_constant`)
GRAIN_LATTICE = "grain_lattice_constant"

#: units and descriptions of the truth datasets this engine adds to the twin's
EXTRA_TRUTH = {
    "flux_factor": ("", "incident flux of the frame relative to the nominal (drift and jitter; frames are not "
                        "normalised)"),
    "n_nanocrystals": ("", "NCs summed coherently in the SAXS of the frame (all grains, all components)"),
    "hot_pixels": ("", "flat indices of the hot pixels (every frame)"),
    "dead_pixels": ("", "flat indices of the dead pixels (every frame)"),
    "grain_rotation_deg": ("deg", ("rotation vector (lab frame) of the NC-weighted mean orientation of the "
                                   "strongest component's grains about its orientation_matrix (N, 3)")),
    "grain_orientation_matrix": ("", ("NC-weighted mean SL orientation of the strongest component's grains, "
                                      "crystal -> lab (N, 3, 3): what a single-orientation fit of the frame can "
                                      "recover")),
    GRAIN_LATTICE: ("A", ("NC-weighted mean lattice constant of the strongest component's grains in the plane "
                          "normal to the beam (least-squares strain of each grain's NC positions): what the SAXS "
                          "reflections of the frame show")),
}

#: the incident beam's direction in the lab frame (+e3, docs/conventions.md)
BEAM = np.array([0.0, 0.0, 1.0])

#: frame facts: the rotation vector (lab frame, deg) of the strongest component's grains' mean
#: orientation about the component's orientation (`RealspaceScan.grain_orientation`)
GRAIN_ROTATION = ("grain_rotation_x", "grain_rotation_y", "grain_rotation_z")


def grain_orientations(rotvec_deg: np.ndarray, orientation_matrix: np.ndarray) -> np.ndarray:
    """(N, 3, 3) mean SL orientations of the grains from their frame facts (`GRAIN_ROTATION`).

    Parameters
    ----------
    rotvec_deg : (N, 3) the grains' mean rotation vectors (lab frame, deg) about the component's
        orientation, the facts of `RealspaceScan.expected` (NaN at empty points).
    orientation_matrix : (N, 3, 3) the strongest component's SL crystal -> lab rotations
        (``/truth/orientation_matrix``).

    Returns
    -------
    np.ndarray
        The mean rotation composed with the component's orientation, as
        `RealspaceScan.grain_orientation` (to rounding: the rotation passes through its rotation
        vector), NaN where the rotation vector is not finite.
    """
    rotvec = np.asarray(rotvec_deg, float)
    out = np.full((rotvec.shape[0], 3, 3), np.nan)
    have = np.all(np.isfinite(rotvec), axis=1)
    out[have] = Rotation.from_rotvec(np.radians(rotvec[have])).as_matrix() @ np.asarray(orientation_matrix)[have]
    return out


@dataclass(frozen=True)
class ComponentDraw:
    """The random objects of one component of a frame (`RealspaceScan.draw`).

    ``label`` the domain, ``weight`` its area fraction in the beam, ``lattice_constant`` (A),
    ``orientation`` its SL crystal -> lab rotation (3, 3); ``grain_rotations`` (n, 3, 3) each
    grain's lab-frame rotation about it and ``grains`` the grains themselves;
    ``nc_orientations`` (m, 3, 3) and ``nc_radii`` (m,) (A) the NCs sampled for the WAXS.
    """

    label: int
    weight: float
    lattice_constant: float
    orientation: np.ndarray
    grain_rotations: np.ndarray
    grains: tuple[Grain, ...]
    nc_orientations: np.ndarray
    nc_radii: np.ndarray

    def grain_mean_rotation(self) -> np.ndarray:
        """(3, 3) the grains' lab-frame rotations averaged with their NC counts as weights
        (chordal L2 mean, `scipy.spatial.transform.Rotation.mean`)."""
        weights = np.array([g.n for g in self.grains], float)
        return Rotation.from_matrix(self.grain_rotations).mean(weights=weights).as_matrix()

    def grain_lattice_constant(self) -> float:
        """The grains' lattice constant in the plane normal to the beam (A), NC-weighted as
        `grain_mean_rotation`: each grain's `Grain.lattice_constant_normal_to` the beam (+e3,
        docs/conventions.md), what its SAXS reflections show. A paracrystal's displacements
        strain each finite grain at random, so this differs from ``lattice_constant`` by a few
        tenths of a percent for the realistic twin's cumulative disorder."""
        weights = np.array([g.n for g in self.grains], float)
        values = np.array([g.lattice_constant_normal_to(BEAM) for g in self.grains])
        return float(np.sum(weights * values) / np.sum(weights))


def _mean_volume_radius(radius: float, sigma: float) -> float:
    """``<R^3>^(1/3)`` of a Gaussian radius distribution (A): the reference NC of the SAXS units."""
    return float((radius ** 3 + 3 * radius * sigma ** 2) ** (1.0 / 3.0))


def _size_average(q: np.ndarray, radius: float, sigma: float, r0: float) -> np.ndarray:
    """``<(V/V0)^2 Phi(qR)^2>`` over a Gaussian radius distribution (+-6 sigma, 201 points).

    Tabulated on 4096 |q| nodes and interpolated linearly (the curve is smooth on that grid).
    """
    q = np.asarray(q, float)
    grid = np.linspace(0.0, float(q.max(initial=0.0)) * 1.001 + 1e-6, 4096)
    z = np.linspace(-6, 6, 201)
    w = np.exp(-0.5 * z * z)
    r = np.maximum(radius + sigma * z, 1e-3)
    vals = (r / r0) ** 6 * sphere_amplitude(grid[:, None] * r[None, :]) ** 2
    return np.interp(q, grid, vals @ w / w.sum())


class RealspaceScan:
    """Everything that is fixed for a scan: pixels, nuisances, per-domain constants.

    Parameters
    ----------
    settings
        A parsed realistic-twin file (`xmodel.realspace.settings.load_settings`, which also takes
        the ``--set`` overrides, of the simulator's tables and of the twin's).
    """

    def __init__(self, settings: RealspaceSettings):
        self.settings = settings
        s = settings
        self.sample: TwinSample = load_twin(s.twin, s.overrides)
        self.comps = components(self.sample)
        cfg0 = self.sample.domains[0].config
        self.experiment = Experiment.from_config(cfg0)
        geom = self.experiment.geometry
        self.shape = tuple(geom.shape)
        pixels = self.experiment.pixels()
        self.valid = pixels.valid
        self.weight = np.where(pixels.valid, pixels.weight, 0.0)
        qabs = np.linalg.norm(pixels.q_lab, axis=1)
        self.energy_kev = cfg0.beam.energy_kev
        self.photons = self.sample.photons
        eff = self.sample.efficiency

        # SAXS points: coherent and incoherent regions (valid pixels only)
        self.saxs_index = np.flatnonzero(pixels.valid & (qabs <= s["saxs.q_max"]))
        self.inc_index = np.flatnonzero(pixels.valid & (qabs > s["saxs.q_max"]) & (qabs <= s["saxs.q_max_incoherent"]))
        self.diffuse_index = np.flatnonzero(pixels.valid & (qabs <= s["saxs.q_max_incoherent"]))
        self.domain_radius = [(d.config.nanocrystal.radius, d.config.nanocrystal.radius_sigma)
                              for d in self.sample.domains]
        self.r0 = _mean_volume_radius(*self.domain_radius[0])
        self.saxs_points = SaxsPoints(pixels.q_lab[self.saxs_index], self.r0)
        self.inc_points = SaxsPoints(pixels.q_lab[self.inc_index], self.r0)
        q_diff = qabs[self.diffuse_index]
        self.diffuse_shape = [_size_average(q_diff, r, sg, _mean_volume_radius(r, sg)) for r, sg in self.domain_radius]

        # WAXS: binned points around the AL rings, interpolated to full pixels
        al = self.sample.domains[0].config.atomic_lattice
        self.al_a = al.lattice_constant
        cut = s["nanocrystals.shape_cutoff"]
        q_lo_det, q_hi_det = float(qabs[pixels.valid].min()), float(qabs[pixels.valid].max())
        self.hkl = rock_salt_hkl(self.al_a, q_hi_det + cut)
        gabs = TWO_PI * np.sqrt(np.sum(self.hkl ** 2, axis=1)) / self.al_a
        self.f2 = rock_salt_intensity(self.hkl, self.al_a, self.energy_kev)
        self.f2_200 = float(rock_salt_intensity(np.array([[2, 0, 0]]), self.al_a, self.energy_kev)[0])
        b = int(s["waxs.binning"])
        self.binning = b
        gb = geom.binned(b) if b > 1 else geom
        qb = gb.q_lab().reshape(-1, 3)
        qbabs = np.linalg.norm(qb, axis=1)
        g_min = float(gabs.min()) if gabs.size else np.inf
        band_b = qbabs >= g_min - cut - 0.02
        self.waxs_binned_index = np.flatnonzero(band_b)
        self.waxs_points = WaxsPoints(qb[band_b])
        self.binned_shape = tuple(gb.shape)
        self.waxs_index = np.flatnonzero(pixels.valid & (qabs >= g_min - cut))
        rows, cols = np.divmod(self.waxs_index, self.shape[1])
        self.waxs_coords = np.stack([(rows - (b - 1) / 2.0) / b, (cols - (b - 1) / 2.0) / b])

        # nuisances, per unit pixel weight (counts) and multiplicative
        nz = s.values["nuisance"]
        grid = np.linspace(0.0, q_hi_det * 1.001, 2048)
        mem = nuisance.membrane_scattering(grid) / nuisance.membrane_scattering(np.array([2.0]))[0]
        air = nuisance.air_scattering(grid) / nuisance.air_scattering(np.array([2.0]))[0]
        level = self.photons * eff["background"]
        self.background = level * (nz["membrane"] * np.interp(qabs, grid, mem) + nz["air"] * np.interp(qabs, grid, air))
        center = beam_center_px(geom)
        m = cfg0.mask
        self.transmission = nuisance.beamstop_transmission(
            self.shape, center, nz["shadow_radius_px"], m.holder_width_px + 2 * (nz["shadow_radius_px"]
                                                                                  - m.beamstop_radius_px),
            m.holder_angle_deg, nz["shadow_edge_px"]).reshape(-1)
        self.streak = nz["streak_counts"] * nuisance.parasitic_streak(
            self.shape, center, nz["streak_angle_deg"], nz["streak_width_px"], nz["streak_length_px"]).reshape(-1)
        rng = np.random.default_rng(np.random.SeedSequence(self.sample.seed, spawn_key=(2 ** 31 - 1,)))
        self.flux = nuisance.flux_factors(rng, self.sample.n_points, nz["flux_drift"], nz["flux_period_frames"],
                                          nz["flux_jitter"])
        self.hot, self.dead = nuisance.bad_pixels(rng, pixels.valid, int(nz["hot_pixels"]), int(nz["dead_pixels"]))
        self.hot_counts = float(nz["hot_counts"])

        # per-domain orientation pieces and scales
        self.bases, self.relationships, self.sl_scale_unit, self.al_scale_unit = [], [], [], []
        for d in self.sample.domains:
            sl, nc, alc = d.config.superlattice, d.config.nanocrystal, d.config.atomic_lattice
            self.bases.append(np.asarray(orientation.base_orientation(sl.beam_direction, sl.inplane_reference), float))
            pairs = alc.custom_pairs if alc.configuration == "custom" else None
            self.relationships.append(np.asarray(orientation.orientation_relationship(alc.configuration, pairs), float))
            g200 = TWO_PI * 2.0 / sl.lattice_constant
            st = g200 * math.radians(sl.mosaic_deg)
            # integrated 200_SL of the Gaussian model per unit B: (2 pi)^1.5 sr st^2; real: N (2 pi)^3 / v_c
            self.sl_scale_unit.append(self.photons * eff["sl_peak"] * TWO_PI ** 1.5 * sl.radial_width * st ** 2
                                      / TWO_PI ** 3)   # times v_c / N at the frame
            ga = TWO_PI * 2.0 / alc.lattice_constant
            sa = alc.radial_width
            sta2 = sa ** 2 + (ga * math.radians(alc.disorder_fwhm_deg) / FWHM_PER_SIGMA) ** 2
            self.al_scale_unit.append(self.photons * eff["al_peak"] * TWO_PI ** -1.5 * sa * sta2
                                      * alc.lattice_constant ** 6 / self.f2_200)   # times 1 / (M <V>)
        self.diffuse_scale = self.photons * eff["diffuse"]
        log.info("realspace scan %s: %d points, %d coherent SAXS pixels, %d incoherent, %d binned WAXS points",
                 settings.name, self.sample.n_points, self.saxs_points.size, self.inc_points.size,
                 self.waxs_points.size)

    # ------------------------------------------------------------------ one frame

    def sl_orientation(self, i: int, c: int) -> np.ndarray:
        """SL crystal -> lab rotation of component ``c`` of scan point ``i``."""
        k = int(self.comps.label[i, c])
        d = self.sample.domains[k]
        return np.asarray(orientation.sl_orientation(self.bases[k], math.radians(d.inplane_deg),
                                                     float(self.comps.tilt1[i, c]), float(self.comps.tilt2[i, c])),
                          float)

    def counts(self, i: int, mu: np.ndarray) -> np.ndarray:
        """Poisson counts (detector shape, uint32) of scan point ``i`` with expected counts ``mu``
        (`expected`): the generator of the draw is ``SeedSequence(seed, spawn_key=(i,))``."""
        rng = np.random.default_rng(np.random.SeedSequence(self.sample.seed, spawn_key=(int(i),)))
        return rng.poisson(mu).astype(np.uint32).reshape(self.shape)

    def draw(self, i: int) -> list[ComponentDraw]:
        """The random objects of scan point ``i``: per component in the beam, its grains and sampled NCs.

        Deterministic for a given twin seed: the generator is ``SeedSequence(seed, spawn_key=(i,
        1))`` and the draws are taken in a fixed order (per component: the grains' rotations, each
        grain's diameter and NCs, then the WAXS NCs' grains, orientations and radii). `expected`
        renders them; `grain_orientation` reads the grains' mean orientation without rendering.
        """
        s = self.settings
        rng = np.random.default_rng(np.random.SeedSequence(self.sample.seed, spawn_key=(i, 1)))
        draws = []
        for c in range(2):
            k = int(self.comps.label[i, c])
            if k < 0:
                continue
            w = float(self.comps.weight[i, c])
            d = self.sample.domains[k]
            radius, sigma = self.domain_radius[k]
            a = float(self.comps.lattice_constant[i, c])
            r_sl = self.sl_orientation(i, c)
            n_grains = max(1, int(round(s["grains.count"] * w)))
            rots = random_rotations(rng, n_grains, math.radians(s["grains.mosaic_deg"]))
            grains = tuple(fcc_grain(
                rng, lattice_constant=a, diameter=rng.uniform(*s["grains.diameter_A"]),
                orientation=rots[g] @ r_sl, radius=radius, radius_sigma=sigma,
                displacement=s["grains.displacement"], displacement_model=s["grains.displacement_model"],
                radius_step=s["nanocrystals.radius_step_A"], edge=s["grains.edge"]) for g in range(n_grains))
            m = max(8, int(round(s["nanocrystals.sampled"] * w)))
            owner = rng.integers(0, n_grains, m)
            al_ideal = rots[owner] @ r_sl @ self.relationships[k]
            disorder = math.radians(d.config.atomic_lattice.disorder_fwhm_deg)
            nc_rot = np.einsum("mij,mjk->mik", al_ideal, random_rotations(rng, m, disorder / FWHM_PER_SIGMA))
            nc_radii = np.maximum(radius + sigma * rng.standard_normal(m), 0.2 * radius)
            draws.append(ComponentDraw(label=k, weight=w, lattice_constant=a, orientation=r_sl,
                                       grain_rotations=rots, grains=grains, nc_orientations=nc_rot,
                                       nc_radii=nc_radii))
        return draws

    def grain_orientation(self, i: int) -> np.ndarray:
        """(3, 3) mean SL orientation of the grains of scan point ``i``'s strongest component (NaN if empty).

        The grains' rotations about the component's orientation averaged with their NC counts as
        weights (the integrated intensity of a grain's reflections is proportional to its NCs):
        the weighted chordal L2 mean of `scipy.spatial.transform.Rotation.mean` (Markley et al.,
        "Averaging quaternions", J. Guid. Control Dyn. 30, 1193 (2007)). This is the orientation a
        single-orientation model of the frame can at best recover; the component's own
        orientation (``/truth/orientation_matrix``) differs from it by the grains' random
        rotations (``grains.mosaic_deg`` each).
        """
        draws = self.draw(i)
        if not draws:
            return np.full((3, 3), np.nan)
        d = draws[0]          # the strongest component (`xmodel.twin.components`), as /truth/orientation_matrix
        return d.grain_mean_rotation() @ d.orientation

    def expected(self, i: int) -> tuple[np.ndarray, dict]:
        """Expected counts (full detector, flat float64) of scan point ``i`` and frame facts.

        Deterministic for a given twin seed (the objects of frame ``i`` are `draw`'s; the Poisson
        draw uses ``SeedSequence(seed, spawn_key=(i,))``). The facts are ``n_nanocrystals``,
        ``sl_snr``, ``grain_rotation_x/y/z`` (`GRAIN_ROTATION`) and ``grain_lattice_constant``
        (`GRAIN_LATTICE`, NaN at empty points).
        """
        sample_part = np.zeros(self.shape[0] * self.shape[1])
        saxs = np.zeros(self.saxs_points.size)
        peaks_only = np.zeros(self.saxs_points.size)
        inc = np.zeros(self.inc_points.size)
        diffuse = np.zeros(self.diffuse_index.size)
        waxs_b = np.zeros(self.waxs_points.size)
        n_total = 0
        draws = self.draw(i)
        for dr in draws:
            k, w, a = dr.label, dr.weight, dr.lattice_constant
            n = sum(gr.n for gr in dr.grains)
            n_total += n
            # --- SAXS: grains, coherent within and incoherent between them
            scale = w * self.sl_scale_unit[k] * (a ** 3 / 4.0) / n
            for gr in dr.grains:
                coherent = grain_intensity(self.saxs_points, gr)
                saxs += scale * coherent
                peaks_only += scale * np.maximum(coherent - self.saxs_points.incoherent(gr.radii), 0.0)
                if self.inc_points.size:
                    inc += scale * self.inc_points.incoherent(gr.radii)
            diffuse += w * self.diffuse_scale * self.diffuse_shape[k]
            # --- WAXS: sampled NCs (each belongs to one of the grains)
            mean_v = (4.0 / 3.0) * math.pi * self.r0 ** 3
            waxs_b += (w * self.al_scale_unit[k] / (dr.nc_radii.size * mean_v)) * nc_intensity(
                self.waxs_points, dr.nc_orientations, dr.nc_radii, self.hkl, self.f2, self.al_a,
                self.settings["nanocrystals.shape_cutoff"])
        sample_part[self.saxs_index] += saxs
        sample_part[self.inc_index] += inc
        sample_part[self.diffuse_index] += diffuse
        if np.any(waxs_b):
            grid = np.zeros(self.binned_shape[0] * self.binned_shape[1])
            grid[self.waxs_binned_index] = waxs_b
            sample_part[self.waxs_index] += ndimage.map_coordinates(
                grid.reshape(self.binned_shape), self.waxs_coords, order=1, mode="nearest")
        flux = float(self.flux[i])
        mu = flux * (self.transmission * (self.weight * (self.background + sample_part)) + self.streak * self.valid)
        mu[self.dead] = 0.0
        mu[self.hot] = self.hot_counts
        # SL detectability as in xmodel.synth (sum s^2 / mu), s the interference part of the SAXS
        s_peaks = flux * self.transmission[self.saxs_index] * self.weight[self.saxs_index] * peaks_only
        mu_s = mu[self.saxs_index]
        sl_snr = float(np.sum(np.where(mu_s > 0, s_peaks ** 2 / np.where(mu_s > 0, mu_s, 1.0), 0.0)))
        facts = {"n_nanocrystals": n_total, "sl_snr": sl_snr}
        rotvec = np.full(3, np.nan)
        facts[GRAIN_LATTICE] = np.nan
        if draws:
            d = draws[0]
            rotvec = np.degrees(Rotation.from_matrix(d.grain_mean_rotation()).as_rotvec())
            facts[GRAIN_LATTICE] = d.grain_lattice_constant()
        facts.update(zip(GRAIN_ROTATION, rotvec.tolist()))
        return mu, facts


def synthesize_realspace(config_path: str | Path, out_dir: str | Path, *, overrides=(), progress: bool = True,
                         restart: bool = False) -> Path:
    """Render a realistic-twin scan: ``DIR/<name>_master.h5`` + data files, ``<name>.poni``, ``truth.h5``.

    Parameters
    ----------
    config_path
        A realistic-twin TOML (e.g. ``configs/twin_realistic_demo.toml``; `xmodel.realspace.settings`).
    out_dir
        Output folder (created if missing).
    overrides
        ``--set`` strings: the simulator's keys (``grains.mosaic_deg=0``) or the twin's
        (``scan.shape=[3,3]``, ``seed=3``); `xmodel.realspace.settings.load_settings`.
    progress
        Print frames done / total, rate and ETA on stderr.
    restart
        Discard an unfinished synthesis in ``out_dir`` and start over; without it one with the same
        settings is resumed and one with other settings refused (`xmodel.synth.open_partial`).

    Returns
    -------
    Path
        The master file.

    Notes
    -----
    The file layout and the truth datasets are those of `xmodel.synth.synthesize` (its
    writers are used), plus `EXTRA_TRUTH`. Counts: Poisson(expected), frame ``i`` drawn with
    ``SeedSequence(seed, spawn_key=(i,))``. A killed run leaves only ``DIR/.<name>.partial/`` and the
    same call resumes it from its last complete data file (`xmodel.synth.render_scan`).
    """
    # the writers of the twin's file layout (one owner of the layout); the physics above does
    # not use the Gaussian-peak model
    from xmodel.synth import (
        SL_VISIBLE_SNR,
        _Progress,
        finish_partial,
        open_partial,
        render_scan,
        synthesis_settings,
        write_truth,
    )
    from xmodel.twin import TRUTH_UNITS

    settings = load_settings(config_path, overrides)
    scan = RealspaceScan(settings)
    sample = scan.sample
    out_dir = Path(out_dir)
    record = synthesis_settings(sample, engine="realspace", overrides=list(overrides),
                                realspace_sha256=hashlib.sha256(settings.path.read_bytes()).hexdigest())
    tmp = open_partial(out_dir, settings.name, record, restart)
    truth = point_truth(sample, scan.comps)
    write_truth(tmp / "truth.h5", sample, truth)
    n = sample.n_points

    def frames_at(points: np.ndarray) -> Iterator[tuple[np.ndarray, dict]]:
        for i in points:
            mu, facts = scan.expected(int(i))
            yield scan.counts(int(i), mu), {"expected_counts": float(mu[scan.valid].sum()), **facts}

    master, values = render_scan(
        tmp, settings.name, n, frames_at, {"expected_counts": np.float64, "sl_snr": np.float64,
                                           "n_nanocrystals": np.int64, GRAIN_LATTICE: np.float64,
                                           **dict.fromkeys(GRAIN_ROTATION, np.float64)},
        geometry=scan.experiment.geometry, positions_um=sample.positions_um(), monitor=scan.photons * scan.flux,
        pixel_mask=scan.experiment.mask, count_time_s=sample.domains[0].config.beam.exposure_s,
        progress=_Progress(f"synth {settings.name} (realspace)", progress))
    expected_sums, sl_snr, n_ncs = values["expected_counts"], values["sl_snr"], values["n_nanocrystals"]
    with h5py.File(tmp / "truth.h5", "a") as f:
        g = f["truth"]
        for key, data in (("expected_counts", expected_sums), ("sl_snr", sl_snr),
                          ("sl_visible", sl_snr >= SL_VISIBLE_SNR ** 2)):
            ds = g.create_dataset(key, data=data)
            ds.attrs["units"], ds.attrs["description"] = TRUTH_UNITS[key]
        rotvec = np.stack([values[key] for key in GRAIN_ROTATION], axis=1)
        r_grains = grain_orientations(rotvec, truth["orientation_matrix"])
        for key, data in (("flux_factor", scan.flux), ("n_nanocrystals", n_ncs), ("hot_pixels", scan.hot),
                          ("dead_pixels", scan.dead), ("grain_rotation_deg", rotvec),
                          ("grain_orientation_matrix", r_grains), (GRAIN_LATTICE, values[GRAIN_LATTICE])):
            ds = g.create_dataset(key, data=data)
            ds.attrs["units"], ds.attrs["description"] = EXTRA_TRUTH[key]
        f.attrs["engine"] = "realspace"
        f.attrs["realspace_toml"] = settings.path.read_text()
    return finish_partial(tmp, out_dir, master)
