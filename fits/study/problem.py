"""The pattern a study is about: a sample config on a grid of points at a given exposure.

Exposure. The scales of a config (``superlattice.peak_scale``, ``superlattice.diffuse_scale``,
``atomic_lattice.peak_scale``, ``background.constant``) are counts per pixel in one frame of
``beam.exposure_s`` seconds. A study at exposure ``t`` multiplies all four by
``t / beam.exposure_s`` (counts grow linearly with the incident photons, as in the twin's
``N = flux * exposure``, `xmodel.twin`), so the Fisher information of the non-scale parameters
grows linearly in ``t`` and their bounds as ``1 / sqrt(t)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from fits.parameters import check_names, edge_value, spec
from fits.study.fisher import FisherAnalysis, analyse_fisher, fisher_matrix, model_jacobian
from fits.study.grid import StudyGrid, build_grid
from xmodel.parameters import ModelParams, params_from_config, structure_from_config
from xmodel.pattern import PatternModel

#: the scale parameters multiplied by the exposure factor (`fits.parameters` names)
SCALES = ("sl_scale", "diffuse_scale", "al_scale", "background")
#: lattice constants (relative to the config's) that the model's support covers
A_RANGE_REL = (0.98, 1.02)


def default_parameters() -> tuple[str, ...]:
    """The parameters a scan fit refines (its ``vary`` list), the default of a study."""
    from fits.study.scan_link import DEFAULT_VARY
    return tuple(DEFAULT_VARY)


def at_exposure(params: ModelParams, factor: float) -> ModelParams:
    """``params`` with the four scales (`SCALES`) multiplied by ``factor`` (module docstring)."""
    if not (np.isfinite(factor) and factor > 0):
        raise ValueError(f"the exposure factor must be a positive number, not {factor!r}; pass exposure_s > 0")
    return params.replace(**{spec(n).field: np.asarray(getattr(params, spec(n).field)) * factor for n in SCALES})


@dataclass(frozen=True, eq=False)
class StudyProblem:
    """A sample on a grid at an exposure: truth, forward model and the points' pixel counts.

    Attributes
    ----------
    config : the loaded `xmodel.config.Config`.
    grid : the `fits.study.grid.StudyGrid`.
    exposure_s : exposure of the frame studied (s).
    truth : `ModelParams` at that exposure (float64, internal units).
    model : float64 `PatternModel` on the grid's points (support over `A_RANGE_REL` of a,
        1.5x wider peaks, orientations within 2 deg).
    names : parameters studied (edge names).
    """

    config: object
    grid: StudyGrid
    exposure_s: float
    truth: ModelParams
    model: PatternModel
    names: tuple[str, ...]

    @classmethod
    def from_config(cls, cfg, names: Sequence[str] | None = None, grid: str = "polar",
                    exposure_s: float | None = None) -> "StudyProblem":
        """Build the study of ``cfg`` (exposure default: the config's ``beam.exposure_s``)."""
        if not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)    # bounds need float64 derivatives
        names = check_names(default_parameters() if names is None else names)
        exposure = float(cfg.beam.exposure_s if exposure_s is None else exposure_s)
        if not (np.isfinite(exposure) and exposure > 0):
            raise ValueError(f"exposure_s = {exposure_s!r} must be a positive number of seconds, e.g. 0.3")
        truth = at_exposure(params_from_config(cfg, dtype=jnp.float64), exposure / cfg.beam.exposure_s)
        a0 = float(cfg.superlattice.lattice_constant)
        a_range = (A_RANGE_REL[0] * a0, A_RANGE_REL[1] * a0)
        g = build_grid(cfg, grid, truth)
        structure = structure_from_config(cfg, a_range)
        model = PatternModel(g.pixels, structure, truth, dtype=jnp.float64, lattice_constant_range=a_range,
                             width_factor=1.5, orientation_margin_deg=2.0)
        return cls(cfg, g, exposure, truth, model, names)

    @property
    def values(self) -> np.ndarray:
        """(n,) true values of the studied parameters (edge units)."""
        return np.array([float(edge_value(self.truth, n)) for n in self.names])

    @property
    def units(self) -> tuple[str, ...]:
        return tuple(spec(n).units for n in self.names)

    def expected(self) -> np.ndarray:
        """(P,) expected counts per pixel at every point."""
        return np.asarray(self.model(self.truth), np.float64)

    def jacobian(self) -> tuple[np.ndarray, np.ndarray]:
        """Expected counts (P,) and their derivatives (P, n) (`fits.study.fisher.model_jacobian`)."""
        return model_jacobian(self.model, self.truth, self.names)

    def fisher(self) -> FisherAnalysis:
        """Fisher information and bounds of the studied parameters (`fits.study.fisher`)."""
        m, jac = self.jacobian()
        return analyse_fisher(fisher_matrix(m, jac, self.grid.weight), self.names)

    def replicates(self, n: int, seed: int | None) -> np.ndarray:
        """(n, P) Poisson replicates as mean counts per pixel of each point.

        The counts summed over a point's ``w`` pixels are Poisson with mean ``w m``; the value
        stored is that sum over ``w`` (as a reduced polar image), 0 on masked points.
        """
        if int(n) < 1:
            raise ValueError(f"the number of replicates must be at least 1, not {n!r}")
        rng = np.random.default_rng(seed)
        w = self.grid.weight
        lam = np.where(w > 0, w * np.maximum(self.expected(), 0.0), 0.0)
        counts = rng.poisson(np.broadcast_to(lam, (int(n), lam.size)))
        return np.where(w > 0, counts / np.where(w > 0, w, 1.0), 0.0)
