"""Sensitivity maps: where on the detector each parameter is measured.

For parameter ``i`` two images over the study's points (`fits.study.grid`):

* ``dI/dtheta_i * sigma_i`` (counts per pixel): the change of the expected pattern when the
  parameter moves by its marginal Cramer-Rao bound ``sigma_i`` (signed; SL spots that move,
  AL arcs that widen);
* the Fisher fraction ``w_p (d m_p / d theta_i)^2 / m_p / F_ii``: the share of the
  parameter's (conditional) information carried by each point; it sums to 1 over the points.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fits.study.fisher import pointwise_fisher
from fits.study.problem import StudyProblem


@dataclass(frozen=True)
class SensitivityMaps:
    """Per-parameter images on the study grid.

    Attributes
    ----------
    names : parameters, in the order of the first axis.
    change : ``(n, *image_shape)`` ``dI/dtheta * sigma`` (counts per pixel; NaN off the grid).
    fisher_fraction : ``(n, *image_shape)`` share of ``F_ii`` per point (NaN off the grid).
    sigma : (n,) the marginal bounds used (edge units).
    """

    names: tuple[str, ...]
    change: np.ndarray
    fisher_fraction: np.ndarray
    sigma: np.ndarray


def sensitivity_maps(problem: StudyProblem, names: Sequence[str] | None = None) -> SensitivityMaps:
    """`SensitivityMaps` of ``names`` (default every studied parameter).

    A parameter without effect (infinite bound) gets a zero change image and a NaN fraction.
    """
    names = tuple(names or problem.names)
    for n in names:
        if n not in problem.names:
            raise ValueError(f"sensitivity map of {n!r} asked, but the study only holds {list(problem.names)}; "
                             "add it to --params")
    m, jac = problem.jacobian()
    fisher = problem.fisher()
    cols = [problem.names.index(n) for n in names]
    sigma = fisher.crlb[cols]
    change = jac[:, cols] * np.where(np.isfinite(sigma), sigma, 0.0)[None, :]
    pf = pointwise_fisher(m, jac[:, cols], problem.grid.weight)
    tot = pf.sum(axis=0)
    frac = np.where(tot > 0, pf / np.where(tot > 0, tot, 1.0), np.nan)
    g = problem.grid
    return SensitivityMaps(names, g.image(change.T), g.image(frac.T), sigma)


def plot_sensitivity(problem: StudyProblem, maps: SensitivityMaps, directory: str | Path) -> list[Path]:
    """One PNG per parameter (change and Fisher fraction side by side) in ``directory``."""
    from matplotlib.colors import LogNorm, SymLogNorm

    from matplotlib.figure import Figure

    out = []
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    g = problem.grid
    polar = g.kind == "polar"
    # polar grid: only the q columns that hold points (the SL and AL bands side by side)
    cols = np.flatnonzero(np.isfinite(maps.change).any(axis=(0, 1))) if polar else None
    for k, n in enumerate(maps.names):
        fig = Figure(figsize=(11, 4.2))
        axes = fig.subplots(1, 2)
        ch, fr = maps.change[k], maps.fisher_fraction[k]
        if polar:
            ch, fr = ch[:, cols], fr[:, cols]
        lim = float(np.nanmax(np.abs(ch))) if np.isfinite(ch).any() and np.nanmax(np.abs(ch)) > 0 else 1.0
        kw = {"origin": "lower" if polar else "upper", "aspect": "auto", "interpolation": "nearest"}
        if polar:
            kw["extent"] = (0, cols.size, g.chi_deg[0], g.chi_deg[-1])
        im0 = axes[0].imshow(ch, cmap="RdBu_r", norm=SymLogNorm(lim * 1e-3, vmin=-lim, vmax=lim), **kw)
        fig.colorbar(im0, ax=axes[0], label="counts per pixel")
        axes[0].set_title(f"dI/d({n}) x CRLB ({maps.sigma[k]:.3g})", fontsize=9)
        pos = fr[np.isfinite(fr) & (fr > 0)]
        if pos.size:
            im1 = axes[1].imshow(np.where(fr > 0, fr, np.nan), cmap="viridis",
                                 norm=LogNorm(max(pos.max() * 1e-5, pos.min()), pos.max()), **kw)
            fig.colorbar(im1, ax=axes[1], label="share of the information")
        axes[1].set_title(f"Fisher information of {n} per point", fontsize=9)
        for ax in axes:
            if polar:
                ticks = np.linspace(0, cols.size - 1, 8).astype(int)
                ax.set_xticks(ticks + 0.5, [f"{g.q[cols[t]]:.3g}" for t in ticks], fontsize=7)
                for gap in np.flatnonzero(np.diff(cols) > 1):
                    ax.axvline(gap + 1, color="k", lw=0.8)
                ax.set_xlabel("q (1/A; bins of the SL and AL bands, gaps marked)")
                ax.set_ylabel("chi (deg)")
            else:
                ax.set_xlabel("column (pixels)")
                ax.set_ylabel("row (pixels)")
        fig.suptitle(f"{problem.config.name}: where {n} is measured ({g.kind} grid, {problem.exposure_s:g} s)",
                     fontsize=10)
        fig.tight_layout()
        path = directory / f"sensitivity_{n}.png"
        fig.savefig(path, dpi=100)
        out.append(path)
    return out
