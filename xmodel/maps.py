"""Scan maps and per-domain views of reduced scans (the grey-level analogue of Fig. 1a,b).

Inputs are results files written by `xmodel.reduction.reduce_scan`, read through
`xmodel.reduced.open_reduced`. Intensities are normalised to the median incident-flux monitor
when the reduction stored one (`xmodel.reduced.ReducedScan.flux_factor`); frames are placed on
the map by their scan positions (a snake scan's reversed rows go back in place).
The plotting functions draw into a given ``ax`` (or a new pyplot-free Figure) and return the
Figure; they never choose a matplotlib backend, so they are safe in notebooks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from xmodel.figures import new_axes, save_figure
from xmodel.reduced import open_reduced


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


def scan_axes(positions_um: np.ndarray | None, shape: tuple[int, int]
              ) -> tuple[np.ndarray, np.ndarray] | None:
    """Column positions x and row positions y (um) of a raster scan, or None if not a grid.

    ``positions_um`` are (N, 2) motor positions (y, x) in um, row-major over ``shape`` (the
    order of ``/entry/reduction/positions``); x is the fast axis along a row.
    """
    if positions_um is None:
        return None
    pos = np.asarray(positions_um, float)
    if pos.ndim != 2 or pos.shape != (int(np.prod(shape)), 2):
        return None
    grid = pos.reshape(shape[0], shape[1], 2)
    y, x = grid[:, 0, 0], grid[0, :, 1]
    if not (np.allclose(grid[..., 0], y[:, None], atol=1e-3 * max(np.ptp(y), 1e-9) + 1e-9)
            and np.allclose(grid[..., 1], x[None, :], atol=1e-3 * max(np.ptp(x), 1e-9) + 1e-9)):
        return None
    return x, y


def _extent(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """imshow extent whose pixel centres are the scan positions (rows downwards)."""
    dx = float(x[1] - x[0]) if x.size > 1 else 1.0
    dy = float(y[1] - y[0]) if y.size > 1 else 1.0
    return (x[0] - dx / 2, x[-1] + dx / 2, y[-1] + dy / 2, y[0] - dy / 2)


def _map_axes(ax, shape, x_um, y_um, step_um):
    """Set extent, labels and ticks of a scan map; returns the imshow extent (None: indices)."""
    from matplotlib.ticker import MaxNLocator

    if x_um is None and step_um:
        x_um, y_um = np.arange(shape[1]) * step_um, np.arange(shape[0]) * step_um
    if x_um is not None:
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
        return _extent(np.asarray(x_um, float), np.asarray(y_um, float))
    ax.set_xlabel("scan column")
    ax.set_ylabel("scan row")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return None


def plot_map(values: np.ndarray, shape: tuple[int, int], path: str | Path | None = None, *, title: str,
             ax=None, step_um: float | None = None, x_um: np.ndarray | None = None,
             y_um: np.ndarray | None = None, label: str = "mean intensity (counts/pixel)", log: bool = False,
             cmap: str = "Greys_r"):
    """A scan map in grey levels (or ``cmap``); NaN (no data) shown white.

    Parameters
    ----------
    values : (rows * cols,) one value per scan point, row-major over ``shape``, or an image
        from :func:`scan_image` (frames placed at their grid points).
    path : also save the figure there.
    ax : matplotlib axes to draw into (default: a new Figure).
    x_um, y_um : positions of the columns and rows (um), e.g. from `scan_axes`; or
        ``step_um``, the step of a grid starting at 0. Without either the axes are indices.
    label : colour-bar label with units.
    cmap : matplotlib colour map name.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib
    from matplotlib.colors import LogNorm

    img = np.asarray(values, float).reshape(shape)
    fig, ax = new_axes(ax, figsize=(5.2, 4.6))
    cmap = matplotlib.colormaps[cmap].with_extremes(bad="white")
    extent = _map_axes(ax, shape, x_um, y_um, step_um)
    norm = LogNorm() if log and np.nanmax(img) > 0 else None
    im = ax.imshow(np.ma.masked_invalid(img), cmap=cmap, norm=norm, extent=extent, interpolation="nearest")
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(title)
    if path is not None:
        save_figure(fig, path)
    return fig


#: label values of a class map that are not classes (as in `fits.analyses.classify`)
EMPTY_LABEL, MIXED_LABEL = -1, -2


def plot_label_maps(maps: dict[str, np.ndarray], names: list[str], colors: list[str], shape: tuple[int, int],
                    path: str | Path | None = None, *, axes=None, x_um: np.ndarray | None = None,
                    y_um: np.ndarray | None = None, step_um: float | None = None):
    """Domain maps coloured like Fig. 1a,b: class colours, grey mixed, white empty.

    Parameters
    ----------
    maps : panel title -> (rows * cols,) labels (class index, -1 empty, -2 mixed), row-major.
    names, colors : class names and their colours (index k -> ``names[k]``, ``colors[k]``).
    shape : (rows, cols) of the scan.
    axes : sequence of ``len(maps)`` matplotlib axes (default: a new Figure, one row).
    x_um, y_um, step_um : scan positions as in `plot_map`.

    Returns
    -------
    matplotlib.figure.Figure; the legend shows every class, "mixed" and "empty" (outlined, so
    that the white of empty points is visible).
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    all_colors = ["#ffffff", "#9e9e9e"] + list(colors)
    cmap = ListedColormap(all_colors)
    if axes is None:
        fig = Figure(figsize=(4.0 * len(maps) + 1.8, 4.0), layout="constrained")
        axes = fig.subplots(1, len(maps), squeeze=False)[0]
    fig = axes[0].figure
    for ax, (title, lab) in zip(axes, maps.items()):
        lab = np.asarray(lab)
        img = np.where(lab == EMPTY_LABEL, 0, np.where(lab == MIXED_LABEL, 1, lab + 2)).reshape(shape)
        extent = _map_axes(ax, shape, x_um, y_um, step_um)
        ax.imshow(img, cmap=cmap, vmin=-0.5, vmax=len(all_colors) - 0.5, interpolation="nearest",
                  origin="upper", extent=extent)
        ax.set_title(title)
    handles = [Patch(facecolor=c, edgecolor="0.3", linewidth=0.8, label=n)
               for c, n in zip(all_colors, ["empty", "mixed"] + list(names))]
    fig.legend(handles=handles, loc="outside right center", fontsize=8, title="class")
    if path is not None:
        save_figure(fig, path)
    return fig


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
                          path: str | Path | None = None, *, title: str, axes=None):
    """A polar image (chi vs log q) and its radial profile, for one domain.

    Parameters
    ----------
    polar : (n_chi, n_q) mean intensity (counts/pixel); radial : (n_q,) its radial profile.
    q : (n_q,) bin centres (1/A); chi : (n_chi,) bin centres (deg).
    path : also save the figure there.
    axes : two matplotlib axes (default: a new Figure).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    if axes is None:
        fig = Figure(figsize=(11, 4.2), layout="constrained")
        a0, a1 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1]})
    else:
        a0, a1 = axes
        fig = a0.figure
    pos = polar[np.isfinite(polar) & (polar > 0)]
    norm = LogNorm(vmin=max(np.percentile(pos, 2), 1e-3), vmax=pos.max()) if pos.size else None
    cmap = matplotlib.colormaps["inferno"].with_extremes(bad="0.6")
    mesh = a0.pcolormesh(q, chi, np.ma.masked_invalid(polar), cmap=cmap, norm=norm, shading="nearest")
    fig.colorbar(mesh, ax=a0, label="counts/pixel")
    a0.set_xscale("log")
    a0.set_xlabel("q (1/Å)")
    a0.set_ylabel("χ (deg)")
    a0.set_title(title)
    a1.loglog(q, radial, lw=1)
    a1.set_xlabel("q (1/Å)")
    a1.set_ylabel("mean intensity (counts/pixel)")
    a1.set_title("radial profile")
    for qq, lab in ((0.083, "200$_{SL}$"), (1.84, "111$_{AL}$"), (2.12, "200$_{AL}$")):
        a1.axvline(qq, color="0.6", lw=0.6, ls="--")
        a1.text(qq, a1.get_ylim()[1], lab, fontsize=7, ha="center", va="top")
    if path is not None:
        save_figure(fig, path)
    return fig
