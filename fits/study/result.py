"""`StudyResult`: the labelled outcome of a parameter study, its JSON and its HDF5 file.

JSON (``xmodel study --json``)::

    {"config": name, "grid": kind, "exposure_s": t, "n_points": P, "total_counts": N,
     "parameters": [{"name", "unit", "value", "crlb", "crlb_conditional",
                     "mc_std", "mc_bias" (with --monte-carlo; from the truth start),
                     "mc_search_std", "mc_search_bias" (with the search start)}, ...],
     "correlation": [[...]] (order of "parameters"), "condition_number": c,
     "unidentifiable": [sentences], "monte_carlo": {start: {"n", "n_used", "seed"}}}

Infinite bounds (a parameter without effect) and undefined correlations are written as
``null``. HDF5 (``--out``, NeXus): ``/entry/study`` (NXprocess) with one dataset per array above,
the parameter names and units as the attributes ``names`` and ``parameter_units``, the NXdata
``correlation_image`` (the correlation matrix, the file's default plot) and the Monte Carlo fits
under ``/entry/study/monte_carlo/<start>``.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fits.study.fisher import FisherAnalysis
from fits.study.montecarlo import MonteCarloResult, monte_carlo
from fits.study.problem import StudyProblem


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class StudyResult:
    """Bounds of the studied parameters of one pattern, and their Monte Carlo check.

    Attributes
    ----------
    config : name of the sample config.
    grid : grid kind ("full", "binned", "polar").
    exposure_s : exposure of the frame (s).
    n_points : points with data; total_counts : expected counts summed over them.
    names, units : the parameters (edge names and units, `fits.parameters`).
    values : (n,) true values (edge units).
    fisher : the `fits.study.fisher.FisherAnalysis` (bounds, correlation, identifiability).
    monte_carlo : ``{start: MonteCarloResult}`` (empty without Monte Carlo).
    """

    config: str
    grid: str
    exposure_s: float
    n_points: int
    total_counts: float
    names: tuple[str, ...]
    units: tuple[str, ...]
    values: np.ndarray
    fisher: FisherAnalysis
    monte_carlo: dict[str, MonteCarloResult] = field(default_factory=dict)

    @property
    def crlb(self) -> dict[str, float]:
        """Marginal bound per parameter (edge units)."""
        return dict(zip(self.names, map(float, self.fisher.crlb)))

    @property
    def crlb_conditional(self) -> dict[str, float]:
        """Conditional bound per parameter (edge units)."""
        return dict(zip(self.names, map(float, self.fisher.crlb_conditional)))

    def to_dict(self) -> dict:
        """The JSON document (module docstring)."""
        params = []
        for j, n in enumerate(self.names):
            row = {"name": n, "unit": self.units[j], "value": _num(self.values[j]),
                   "crlb": _num(self.fisher.crlb[j]), "crlb_conditional": _num(self.fisher.crlb_conditional[j])}
            for start, mc in self.monte_carlo.items():
                key = "mc" if start == "truth" else f"mc_{start}"
                std, bias = mc.of(n)
                row[f"{key}_std"], row[f"{key}_bias"] = _num(std), _num(bias)
            params.append(row)
        corr = [[_num(v) for v in row] for row in self.fisher.correlation]
        out = {"config": self.config, "grid": self.grid, "exposure_s": self.exposure_s,
               "n_points": self.n_points, "total_counts": self.total_counts, "parameters": params,
               "correlation": corr, "condition_number": _num(self.fisher.condition_number),
               "unidentifiable": list(self.fisher.unidentifiable)}
        if self.monte_carlo:
            out["monte_carlo"] = {s: {"n": mc.n, "n_used": mc.n_used, "seed": mc.seed}
                                  for s, mc in self.monte_carlo.items()}
        return out

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        """A plain-text table of the bounds (and Monte Carlo spreads) for the terminal."""
        starts = list(self.monte_carlo)
        head = f"{'parameter':<18} {'unit':<7} {'value':>11} {'CRLB':>10} {'CRLB|fixed':>10}"
        for s in starts:
            head += f" {'MC std (' + s + ')':>18} {'MC bias':>10}"
        lines = [f"{self.config}: {self.grid} grid, {self.n_points} points, exposure {self.exposure_s:g} s, "
                 f"{self.total_counts:.4g} expected counts", head]
        for j, n in enumerate(self.names):
            line = (f"{n:<18} {self.units[j]:<7} {self.values[j]:>11.6g} {self.fisher.crlb[j]:>10.3g} "
                    f"{self.fisher.crlb_conditional[j]:>10.3g}")
            for s in starts:
                std, bias = self.monte_carlo[s].of(n)
                line += f" {std:>18.3g} {bias:>10.3g}"
            lines.append(line)
        for s in starts:
            mc = self.monte_carlo[s]
            lines.append(f"Monte Carlo ({s} start): {mc.n_used} of {mc.n} fits succeeded (seed {mc.seed})")
        lines.append(f"condition number (scale-free Fisher matrix): {self.fisher.condition_number:.4g}")
        lines += [f"not identifiable: {m}" for m in self.fisher.unidentifiable]
        return "\n".join(lines)

    def write(self, path: str | Path) -> Path:
        """Write ``/entry/study`` to the HDF5 file ``path`` (module docstring)."""
        import h5py

        from xmodel import nexus

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            entry = nexus.create_entry(f, title=f"xmodel study: {self.config}")
            g = nexus.describe_process(entry.create_group("study"), program="xmodel study", parameters={
                "config": self.config, "grid": self.grid, "exposure_s": self.exposure_s,
                "names": list(self.names)})
            g.attrs["config"] = self.config
            g.attrs["grid"] = self.grid
            g.attrs["exposure_s"] = self.exposure_s
            g.attrs["n_points"] = self.n_points
            g.attrs["total_counts"] = self.total_counts
            g.attrs["names"] = list(self.names)
            g.attrs["parameter_units"] = list(self.units)
            g.create_dataset("value", data=self.values)
            g.create_dataset("crlb", data=self.fisher.crlb)
            g.create_dataset("crlb_conditional", data=self.fisher.crlb_conditional)
            g.create_dataset("fisher", data=self.fisher.fisher)
            g.create_dataset("correlation", data=self.fisher.correlation)
            g.attrs["condition_number"] = self.fisher.condition_number
            g.attrs["unidentifiable"] = json.dumps(list(self.fisher.unidentifiable))
            plot = nexus.create_nxdata(g, "correlation_image", "correlation", self.fisher.correlation,
                                       axes=[None, None], long_name="correlation of the bounds",
                                       title="correlations of " + ", ".join(self.names), compress=False)
            plot.attrs["names"] = list(self.names)          # row and column k: names[k]
            nexus.set_default(plot)
            if self.monte_carlo:
                nexus.require_group(g, "monte_carlo", "NXcollection")
            for s, mc in self.monte_carlo.items():
                m = nexus.require_group(g["monte_carlo"], s, "NXcollection")
                m.attrs["names"] = list(mc.names)
                m.attrs["seed"] = -1 if mc.seed is None else int(mc.seed)
                m.create_dataset("values", data=mc.values)
                m.create_dataset("truth", data=mc.truth)
                m.create_dataset("ok", data=mc.ok)
                m.create_dataset("std", data=mc.std)
                m.create_dataset("bias", data=mc.bias)
        return path


def result_of(problem: StudyProblem, fisher: FisherAnalysis | None = None,
              mc: dict[str, MonteCarloResult] | None = None) -> StudyResult:
    """`StudyResult` of ``problem`` (its Fisher analysis computed if not given)."""
    fisher = fisher or problem.fisher()
    w = problem.grid.weight
    total = float(np.sum(w * problem.expected()))
    return StudyResult(config=str(problem.config.name), grid=problem.grid.kind, exposure_s=problem.exposure_s,
                       n_points=int(np.count_nonzero(w > 0)), total_counts=total, names=problem.names,
                       units=problem.units, values=problem.values, fisher=fisher, monte_carlo=dict(mc or {}))


def study(cfg, names: Sequence[str] | None = None, *, grid: str = "polar", exposure_s: float | None = None,
          monte_carlo_n: int = 0, seed: int | None = 0, starts: tuple[str, ...] = ("truth",),
          cache_dir: str | None = None) -> StudyResult:
    """Cramer-Rao bounds of one pattern, optionally checked by Monte Carlo refits.

    Parameters
    ----------
    cfg : loaded `xmodel.config.Config` (experiment and sample).
    names : parameters to study (`fits.parameters` edge names); default: those a scan fit refines.
    grid : "full", "binned" or "polar" (`fits.study.grid`).
    exposure_s : exposure (s); default the config's ``beam.exposure_s`` (`fits.study.problem`).
    monte_carlo_n : replicates to refit (0: none).
    seed : seed of the replicates.
    starts : Monte Carlo starts (`fits.study.montecarlo.STARTS`).
    cache_dir : template bank cache of the "search" start.

    Returns
    -------
    StudyResult

    Examples
    --------
    >>> from xmodel.config import default_paths, load_config      # doctest: +SKIP
    >>> r = study(load_config(default_paths("green")), ["tilt1_deg", "lattice_constant"])  # doctest: +SKIP
    >>> r.crlb["tilt1_deg"]                                         # doctest: +SKIP
    """
    problem = StudyProblem.from_config(cfg, names, grid, exposure_s)
    mc = monte_carlo(problem, monte_carlo_n, seed, starts, cache_dir) if monte_carlo_n else {}
    return result_of(problem, mc=mc)
