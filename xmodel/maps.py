"""Scan maps and per-domain views of reduced scans (the grey-level analogue of Fig. 1a,b).

Inputs are results files written by `xmodel.reduction.reduce_scan`, read through
`xmodel.reduced.open_reduced`. Intensities are normalised to the median incident-flux monitor
when the reduction stored one (`xmodel.reduced.ReducedScan.flux_factor`); frames are placed on
the map by their scan positions (a snake scan's reversed rows go back in place).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from xmodel.reduced import open_reduced  # noqa: E402


def ring_intensity(results: str | Path, q_centre: float, half_width: float | None = None,
                   batch: int = 256, normalised: bool = True) -> np.ndarray:
    """Mean intensity per frame in the band ``|q - q_centre| <= half_width`` (counts per pixel).

    Averages the valid (non-NaN) polar bins of the band, over all chi: the quantity mapped in
    the paper's Fig. 1a,b (at q_SL = 0.083 and q_AL = 2.12 1/A). ``half_width`` defaults to
    3 % of ``q_centre``. Frames with no valid bin in the band are NaN (there is no data). With
    ``normalised`` (default) each frame is scaled to the median monitor (no monitor: unchanged).
    """
    hw = 0.03 * q_centre if half_width is None else half_width
    red = open_reduced(results)
    q = red.q
    band = np.flatnonzero(np.abs(q - q_centre) <= hw)
    if band.size == 0:
        raise ValueError(f"{results}: no q bin within {hw:.4g} 1/A of q = {q_centre} "
                         f"(bins span {q.min():.4g}..{q.max():.4g} 1/A)")
    n = red.frames_done
    out = np.full(red.n_frames, np.nan)
    lo, hi = band[0], band[-1] + 1
    for s in range(0, n, batch):
        block = red.polar(np.s_[s:min(n, s + batch)])[:, :, lo:hi]
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(block)
            cnt = valid.sum(axis=(1, 2))
            out[s:s + block.shape[0]] = np.where(cnt > 0, np.nansum(block, axis=(1, 2)) / np.maximum(cnt, 1), np.nan)
    return out * red.flux_factor() if normalised else out


def scan_grid(results: str | Path) -> tuple[int, int]:
    """(rows, cols) of the map: the grid of the scan positions or the stored scan shape.

    Without either, says once that there are no scan positions and falls back to a square of
    the frames (ValueError if their number is not a square).
    """
    red = open_reduced(results)
    if red.grid is not None:
        return red.grid.shape
    if red.scan_shape is not None:
        return red.scan_shape
    red.has_positions()
    side = int(round(np.sqrt(red.n_frames)))
    if side * side != red.n_frames:
        raise ValueError(f"{results}: {red.n_frames} frames and no scan positions or shape; cannot arrange "
                         f"them on a map: reduce again with --scan-shape ROWSxCOLS or --positions FILE.")
    return side, side


def scan_image(results: str | Path, values: np.ndarray) -> np.ndarray:
    """Per-frame values as a map image (rows, cols), each frame at its grid point (NaN: no frame)."""
    red = open_reduced(results)
    if red.grid is not None:
        return red.grid.image(values)
    return np.asarray(values, float).reshape(scan_grid(results))


def plot_map(values: np.ndarray, shape: tuple[int, int], path: str | Path, *, title: str, step_um: float | None = None,
             label: str = "mean intensity (counts/pixel)", log: bool = False) -> Path:
    """A scan map in grey levels; NaN (no data) shown white. ``values``: per frame in raster
    order (reshaped to ``shape``) or an image from :func:`scan_image`."""
    img = np.asarray(values, float).reshape(shape)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    cmap = matplotlib.colormaps["Greys_r"].with_extremes(bad="white")
    extent = None
    if step_um:
        extent = (0, shape[1] * step_um, shape[0] * step_um, 0)
        ax.set_xlabel("x (um)")
        ax.set_ylabel("y (um)")
    norm = matplotlib.colors.LogNorm() if log and np.nanmax(img) > 0 else None
    im = ax.imshow(np.ma.masked_invalid(img), cmap=cmap, norm=norm, extent=extent, interpolation="nearest")
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def average_frames(results: str | Path, frames: np.ndarray, normalised: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Mean polar image and radial profile over the given frame indices (NaN-aware), each frame
    scaled to the median monitor when ``normalised`` (default) and a monitor is stored."""
    frames = np.sort(np.asarray(frames, int))
    if frames.size == 0:
        raise ValueError(f"{results}: no frames to average")
    red = open_reduced(results)
    factor = red.flux_factor() if normalised else np.ones(red.n_frames)
    acc = cnt = rad = rcnt = None
    for s in range(0, frames.size, 128):
        idx = frames[s:s + 128]
        p = red.polar(idx) * factor[idx, None, None]
        r = red.radial(idx) * factor[idx, None]
        if acc is None:
            acc, cnt = np.zeros(p.shape[1:]), np.zeros(p.shape[1:])
            rad, rcnt = np.zeros(r.shape[1:]), np.zeros(r.shape[1:])
        acc += np.nansum(p, axis=0)
        cnt += np.isfinite(p).sum(axis=0)
        rad += np.nansum(r, axis=0)
        rcnt += np.isfinite(r).sum(axis=0)
    with np.errstate(invalid="ignore"):
        return np.where(cnt > 0, acc / np.maximum(cnt, 1), np.nan), np.where(rcnt > 0, rad / np.maximum(rcnt, 1), np.nan)


def plot_polar_and_radial(polar: np.ndarray, radial: np.ndarray, q: np.ndarray, chi: np.ndarray,
                          path: str | Path, *, title: str) -> Path:
    """A polar image (chi vs log q) and its radial profile, for one domain."""
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.4, 1]})
    pos = polar[np.isfinite(polar) & (polar > 0)]
    norm = matplotlib.colors.LogNorm(vmin=max(np.percentile(pos, 2), 1e-3), vmax=pos.max()) if pos.size else None
    cmap = matplotlib.colormaps["inferno"].with_extremes(bad="0.6")
    a0.pcolormesh(q, chi, np.ma.masked_invalid(polar), cmap=cmap, norm=norm, shading="nearest")
    a0.set_xscale("log")
    a0.set_xlabel("q (1/A)")
    a0.set_ylabel("chi (deg)")
    a0.set_title(title)
    a1.loglog(q, radial, lw=1)
    a1.set_xlabel("q (1/A)")
    a1.set_ylabel("mean intensity (counts/pixel)")
    for qq, lab in ((0.083, "200$_{SL}$"), (1.84, "111$_{AL}$"), (2.12, "200$_{AL}$")):
        a1.axvline(qq, color="0.6", lw=0.6, ls="--")
        a1.text(qq, a1.get_ylim()[1], lab, fontsize=7, ha="center", va="top")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
