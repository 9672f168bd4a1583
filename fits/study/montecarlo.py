"""Monte Carlo validation of the Cramer-Rao bounds: refits of Poisson replicates.

N replicates of the expected pattern on the study's grid (`StudyProblem.replicates`: Poisson
counts of every point, stored as mean counts per pixel like a reduced image) are fitted

* ``"truth"``: by the scan refinement (`fits.batch.fit_batch`, the scan fit's iteration limit,
  tolerance and lattice-constant bounds) started at the true parameters, varying the studied
  parameters;
* ``"search"``: by the whole scan fit of a frame (`fits.study.scan_link.fit_frames`: template
  search, linear scales, configuration choice, refinement) on the polar grid, which reports the
  orientation as (zone axis, tilts, in-plane angle) by `decompose_orientation`; the truth is
  decomposed the same way before differences are taken.

The empirical standard deviation (``ddof=1``) and the bias (mean minus truth) over the
replicates whose fit succeeded (`fits.status.FitStatus.success`) are set beside the bounds. With
N replicates the standard deviation itself is uncertain by about ``1 / sqrt(2 (N - 1))``
(7 % at N = 100) for Gaussian estimates.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fits.status import FitStatus
from fits.study.problem import StudyProblem

#: ways to start the refits
STARTS = ("truth", "search")


@dataclass(frozen=True)
class MonteCarloResult:
    """Refits of N replicates from one kind of start.

    Attributes
    ----------
    start : "truth" or "search".
    names : parameters compared (those of the study the fit reports).
    values : (N, n) fitted values (edge units; NaN where the fit did not succeed).
    truth : (n,) true values (edge units; orientation angles decomposed as the fit reports them
        for the "search" start).
    ok : (N,) whether each fit succeeded.
    seed : seed of the replicates.
    """

    start: str
    names: tuple[str, ...]
    values: np.ndarray
    truth: np.ndarray
    ok: np.ndarray
    seed: int | None

    @property
    def n(self) -> int:
        return int(self.ok.size)

    @property
    def n_used(self) -> int:
        return int(self.ok.sum())

    @property
    def std(self) -> np.ndarray:
        """(n,) standard deviation of the successful fits (``ddof=1``; NaN with fewer than 2)."""
        v = self.values[self.ok]
        return np.std(v, axis=0, ddof=1) if v.shape[0] > 1 else np.full(len(self.names), np.nan)

    @property
    def bias(self) -> np.ndarray:
        """(n,) mean of the successful fits minus the truth."""
        v = self.values[self.ok]
        return np.mean(v, axis=0) - self.truth if v.shape[0] else np.full(len(self.names), np.nan)

    def of(self, name: str) -> tuple[float, float]:
        """(std, bias) of parameter ``name``, NaN if this start does not report it."""
        if name not in self.names:
            return float("nan"), float("nan")
        j = self.names.index(name)
        return float(self.std[j]), float(self.bias[j])


def _check(n: int, start: str) -> None:
    if isinstance(n, bool) or int(n) != n or int(n) < 2:
        raise ValueError(f"--monte-carlo needs at least 2 replicates to estimate a spread, not {n!r}")
    if start not in STARTS:
        raise ValueError(f"unknown Monte Carlo start {start!r}; valid starts are {list(STARTS)}")


def refit_from_truth(problem: StudyProblem, observed: np.ndarray, seed: int | None = None) -> MonteCarloResult:
    """Fit every replicate with `fits.batch.fit_batch` from the truth (the scan refinement)."""
    from fits.batch import fit_batch
    from fits.study.scan_link import FitSettings

    settings = FitSettings()
    a0 = float(problem.config.superlattice.lattice_constant)
    bounds = {"lattice_constant": (settings.support.a_range_rel[0] * a0, settings.support.a_range_rel[1] * a0)} \
        if "lattice_constant" in problem.names else None
    w = np.broadcast_to(problem.grid.weight, observed.shape)
    f = fit_batch(observed, w, problem.model, problem.truth, problem.names, bounds=bounds,
                  max_iter=settings.refine.max_iter, tol=settings.refine.tol)
    ok = np.array([s.success for s in f.status])
    values = np.stack([f.values[n] for n in problem.names], axis=1)
    return MonteCarloResult("truth", problem.names, np.where(ok[:, None], values, np.nan), problem.values, ok, seed)


#: parameters the scan fit reports, by their study names
_SCAN_REPORTED = ("lattice_constant", "inplane_deg", "tilt1_deg", "tilt2_deg", "disorder_deg", "sl_scale",
                  "diffuse_scale", "al_scale", "background")


def refit_from_search(problem: StudyProblem, observed: np.ndarray, seed: int | None = None,
                      cache_dir: str | None = None) -> MonteCarloResult:
    """Fit every replicate with the whole scan fit of a frame, search included (polar grid only)."""
    from fits.study.scan_link import FitSettings, FitSetup, fit_frames
    from xmodel.orientation import decompose_orientation

    g = problem.grid
    if g.kind != "polar":
        raise ValueError(f"the Monte Carlo start 'search' runs the scan fit, which works on the polar grid; "
                         f"use --grid polar instead of --grid {g.kind}")
    settings = FitSettings.of("Monte Carlo refits", cache_dir=cache_dir, neighbour_passes=0)
    counts = g.image(g.weight, fill=0.0)
    setup = FitSetup.build(problem.config, g.q, g.chi_deg, counts, settings)
    polar = g.image(observed)                            # NaN outside the fit points
    names = tuple(n for n in problem.names if n in _SCAN_REPORTED)
    rows = []
    oks = []
    for start in range(0, observed.shape[0], settings.run.batch):
        out = fit_frames(polar[start:start + settings.run.batch], setup, settings)
        oks.append(np.array([FitStatus.from_code(int(c)).success for c in out["status"]]))
        rows.append(np.stack([np.asarray(out[n], float) for n in names], axis=1))
    ok = np.concatenate(oks)
    values = np.concatenate(rows)
    truth = problem.values[[problem.names.index(n) for n in names]]
    angles = decompose_orientation(np.asarray(problem.truth.sl_orientation(), np.float64)[None], list(settings.search.zones))
    for k in ("inplane_deg", "tilt1_deg", "tilt2_deg"):
        if k in names:
            truth[names.index(k)] = float(angles[k][0])
    ok &= np.all(np.isfinite(values), axis=1)
    return MonteCarloResult("search", names, np.where(ok[:, None], values, np.nan), truth, ok, seed)


def monte_carlo(problem: StudyProblem, n: int, seed: int | None = 0, starts: tuple[str, ...] = ("truth",),
                cache_dir: str | None = None) -> dict[str, MonteCarloResult]:
    """Refit ``n`` Poisson replicates (the same replicates for every start).

    Parameters
    ----------
    problem : the study (truth, model, grid).
    n : number of replicates (>= 2).
    seed : seed of the replicates (`numpy.random.default_rng`).
    starts : any of `STARTS`.
    cache_dir : template bank cache of the "search" start.

    Returns
    -------
    ``{start: MonteCarloResult}``.
    """
    for s in starts:
        _check(n, s)
    observed = problem.replicates(int(n), seed)
    out = {}
    for s in starts:
        out[s] = refit_from_truth(problem, observed, seed) if s == "truth" else \
            refit_from_search(problem, observed, seed, cache_dir)
    return out
