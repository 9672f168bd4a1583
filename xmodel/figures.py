"""Figures of detector patterns (like the paper's Fig. 2f-j and S4) and of CCFs (Fig. 2a-e).

Every plotting function draws into a given matplotlib ``ax`` (or a new `matplotlib.figure.Figure`
without pyplot, so no backend is chosen or switched) and returns the Figure; the caller saves
it (``fig.savefig(path)``), or a notebook shows it. Nothing here calls ``matplotlib.use``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

#: reflections whose closest point of the Ewald sphere lies within this fraction of |G| are
#: candidates for a label (an AL arc of 17 deg FWHM disorder reaches 0.2 |G| off the sphere)
EWALD_TOLERANCE = 0.25
#: a label needs the pattern near the reflection to be this many times the median of its
#: q ring (the arc or spot stands out of the ring's background)
VISIBILITY = 2.0
#: the inset of `plot_pattern` enlarges the detector region out to this |q| (1/A): the SAXS
#: reflections up to about 440_SL of a 150 A superlattice
SAXS_Q_MAX = 0.3


def miller_label(hkl, subscript: str = "") -> str:
    """Mathtext Miller indices with overlined negatives, e.g. ``$\\overline{2}00_{AL}$``."""
    parts = []
    for v in hkl:
        v = float(v)
        iv = int(round(v))
        text = str(abs(iv)) if abs(v - iv) < 1e-9 else f"{abs(v):g}"
        parts.append(rf"\overline{{{text}}}" if v < 0 else text)
    sep = r"\,"if any(abs(float(v)) >= 10 for v in hkl) else ""
    sub = rf"_{{\mathrm{{{subscript}}}}}" if subscript else ""
    return "$" + sep.join(parts) + sub + "$"


def new_axes(ax=None, figsize: tuple[float, float] = (6.4, 4.8)):
    """``(figure, ax)``: the given axes and its figure, or a new pyplot-free Figure and axes."""
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (folders created); the format follows the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def visible_reflections(reflections: list[dict], image: np.ndarray, mask: np.ndarray,
                        q: np.ndarray | None = None, *, ewald_tolerance: float = EWALD_TOLERANCE,
                        visibility: float = VISIBILITY, edge_margin: float = 0.15,
                        box: int = 1) -> list[dict]:
    """Reflections worth a label: near the Ewald sphere and standing out of the pattern.

    Parameters
    ----------
    reflections : rows of `xmodel.peaks.reflection_table` (``include_all=True`` also finds arcs
        whose brightest point lies just off the detector).
    image, mask : the pattern (counts) and its mask (True = masked), (rows, cols).
    q : |q| of every pixel (1/A), shape of ``image``; without it the ring background is the
        median of the whole image.
    ewald_tolerance : keep ``|ewald_distance| <= ewald_tolerance * q``.
    visibility : keep reflections whose pattern near the (edge-clipped) position, the mean
        of a ``2 box + 1`` square, is at least ``visibility`` times the median of the valid
        pixels of its q ring (``|q - q_hkl| <= 3 %``).
    edge_margin : positions up to this fraction of the detector size outside it are clipped to
        the edge (the arc reaches onto the detector).

    Returns
    -------
    The kept rows, each with ``row``/``col`` clipped into the image and ``contrast`` (the
    ratio above), highest contrast first.
    """
    img = np.asarray(image, float)
    valid = ~np.asarray(mask, bool) & np.isfinite(img)
    rows, cols = img.shape
    overall = float(np.median(img[valid])) if valid.any() else 0.0
    ring_median = _ring_medians(np.asarray(q, float), img, valid) if q is not None else None
    out = []
    for r in reflections:
        row, col, qr = float(r["row"]), float(r["col"]), float(r["q"])
        if not (np.isfinite(row) and np.isfinite(col)):
            continue
        if abs(float(r["ewald_distance"])) > ewald_tolerance * qr:
            continue
        if not (-edge_margin * rows <= row <= (1 + edge_margin) * rows
                and -edge_margin * cols <= col <= (1 + edge_margin) * cols):
            continue
        ri, ci = int(np.clip(round(row), 0, rows - 1)), int(np.clip(round(col), 0, cols - 1))
        sl = (slice(max(0, ri - box), ri + box + 1), slice(max(0, ci - box), ci + box + 1))
        near = img[sl][valid[sl]]
        if near.size == 0:
            continue
        background = overall if ring_median is None else ring_median(qr, overall)
        contrast = float(np.mean(near)) / background if background > 0 else np.inf
        if contrast >= visibility:
            out.append({**r, "row": float(ri), "col": float(ci), "contrast": contrast})
    return sorted(out, key=lambda r: -r["contrast"])


def _ring_medians(q: np.ndarray, img: np.ndarray, valid: np.ndarray, rel_width: float = 0.03):
    """``f(q0, default)``: median of the valid pixels in the log-spaced q bin (``rel_width`` wide) of q0.

    The medians are taken over a regular subsample of at most about 250 000 pixels (every
    ``s``-th row and column), which leaves thousands of pixels per ring on a 4 Mpixel detector.
    """
    s = max(1, int(np.sqrt(q.size / 250_000)))
    q, img, valid = q[::s, ::s], img[::s, ::s], valid[::s, ::s]
    ok = valid & np.isfinite(q) & (q > 0)
    if not ok.any():
        return lambda q0, default: default
    qv, iv = q[ok], img[ok]
    lo = float(qv.min())
    step = np.log1p(rel_width)
    idx = np.floor(np.log(qv / lo) / step).astype(np.int64)
    order = np.lexsort((iv, idx))
    idx, iv = idx[order], iv[order]
    starts = np.flatnonzero(np.r_[True, np.diff(idx) > 0])
    ends = np.r_[starts[1:], idx.size]
    medians = {int(idx[s]): float(iv[(s + e - 1) // 2] + iv[(s + e) // 2]) / 2 for s, e in zip(starts, ends)}

    def lookup(q0: float, default: float) -> float:
        if q0 <= 0:
            return default
        return medians.get(int(np.floor(np.log(q0 / lo) / step)), default)
    return lookup


def _saxs_reach(q: np.ndarray | None, centre: tuple[float, float], default: float) -> float:
    """Largest row or column distance (pixels) from ``centre`` of the pixels with q <= SAXS_Q_MAX."""
    if q is None:
        return default
    r, c = np.nonzero(np.asarray(q) <= SAXS_Q_MAX)
    if r.size == 0:
        return default
    return float(max(np.abs(r - centre[0]).max(), np.abs(c - centre[1]).max()))


def _q_rings(ax, q: np.ndarray, region: tuple[int, int, int, int], n: int, color: str, fontsize: float) -> None:
    """Contours of constant |q| (1/A) at round values over ``region`` = (r0, r1, c0, c1)."""
    from matplotlib.ticker import MaxNLocator

    r0, r1, c0, c1 = region
    step = max(1, int(np.sqrt((r1 - r0) * (c1 - c0) / 250_000)))     # q is smooth: contour a subsample
    sub = q[r0:r1:step, c0:c1:step]
    if sub.size < 4 or not np.isfinite(sub).any():
        return
    levels = [v for v in MaxNLocator(n).tick_values(np.nanmin(sub), np.nanmax(sub))
              if np.nanmin(sub) < v < np.nanmax(sub)]
    if not levels:
        return
    cs = ax.contour(np.arange(c0, c1, step), np.arange(r0, r1, step), sub, levels=levels, colors=color,
                    linewidths=0.5, linestyles=":", alpha=0.8)
    ax.clabel(cs, fmt=lambda v: f"{v:g} 1/Å", fontsize=fontsize, colors=color)


def plot_pattern(image: np.ndarray, mask: np.ndarray, beam_center: tuple[float, float],
                 path: str | Path | None = None, *, ax=None, q: np.ndarray | None = None,
                 reflections: list[dict] | None = None, title: str = "", saxs_half_width: float | None = None,
                 max_labels: int = 24, ewald_tolerance: float = EWALD_TOLERANCE,
                 visibility: float = VISIBILITY):
    """Detector image on a log scale with the SAXS region enlarged as an inset.

    Parameters
    ----------
    image : (rows, cols) counts; masked pixels are shown grey.
    mask : (rows, cols) True where masked.
    beam_center : (row, col) of the direct beam in pixels (centre of the inset).
    path : also save the figure there (the command line does; notebooks need not).
    ax : matplotlib axes to draw into (default: a new Figure).
    q : |q| of every pixel (1/A), e.g. ``Geometry.q()``: rings of constant q are drawn and
        the visibility of reflections is judged against their ring.
    reflections : rows of `xmodel.peaks.reflection_table`; those that pass
        `visible_reflections` (close to the Ewald sphere, standing out of their ring) are
        labelled, AL on the main image and SL in the inset, at most ``max_labels`` each.
    saxs_half_width : half size of the inset region (pixels); default: the reach of
        ``q <= SAXS_Q_MAX`` around the beam when ``q`` is given, else 10 % of the image height
        (both follow the binning).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib
    from matplotlib.colors import LogNorm

    img = np.asarray(image, float)
    msk = np.asarray(mask, bool)
    if q is not None and np.shape(q) != img.shape:
        raise ValueError(f"q has shape {np.shape(q)}, the image {img.shape}; pass the q map of "
                         "the same (binned) detector")
    valid = ~msk & np.isfinite(img)
    pos = img[valid & (img > 0)]
    vmin = max(np.percentile(pos, 5), 1e-3) if pos.size else 1e-3
    vmax = max(pos.max(), vmin * 10) if pos.size else 1.0
    shown = np.ma.masked_array(np.clip(img, vmin, None), ~valid)
    cmap = matplotlib.colormaps["inferno"].with_extremes(bad="0.6")
    norm = LogNorm(vmin=vmin, vmax=vmax)

    fig, ax = new_axes(ax, figsize=(8.2, 8))
    im = ax.imshow(shown, cmap=cmap, norm=norm, interpolation="antialiased", origin="upper")
    ax.set_xlabel("column (pixel)")
    ax.set_ylabel("row (pixel)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="counts per pixel")
    r0, c0 = beam_center
    rows, cols = img.shape
    h = saxs_half_width if saxs_half_width is not None else _saxs_reach(q, (r0, c0), 0.1 * rows)
    box = (max(0, int(r0 - h)), min(rows, int(r0 + h)), max(0, int(c0 - h)), min(cols, int(c0 + h)))
    # the inset sits in the empty band between the SAXS and the WAXS rings (beam near the
    # lower-left corner, WAXS ring across the upper right)
    inset = ax.inset_axes([0.02, 0.30, 0.40, 0.40])
    inset.imshow(shown[box[0]:box[1], box[2]:box[3]], cmap=cmap, norm=norm, origin="upper",
                 extent=(box[2] - 0.5, box[3] - 0.5, box[1] - 0.5, box[0] - 0.5), interpolation="nearest")
    inset.set_xticks([])
    inset.set_yticks([])
    inset.set_title("SAXS (enlarged)", fontsize=8, color="w", pad=2)
    ax.indicate_inset_zoom(inset, edgecolor="w")
    if q is not None:
        qq = np.asarray(q, float)
        _q_rings(ax, np.where(msk, np.nan, qq), (0, rows, 0, cols), 5, "0.85", 7)
        _q_rings(inset, np.where(msk, np.nan, qq), box, 3, "0.85", 6)
    shown_rows = visible_reflections(reflections or [], img, msk, q, ewald_tolerance=ewald_tolerance,
                                     visibility=visibility)
    for lattice, target in (("AL", ax), ("SL", inset)):
        rows_l = [r for r in shown_rows if r["lattice"] == lattice]
        if lattice == "SL":
            rows_l = [r for r in rows_l if box[0] <= r["row"] < box[1] and box[2] <= r["col"] < box[3]]
        for r in rows_l[:max_labels]:
            target.annotate(miller_label(r["hkl"], lattice), (r["col"], r["row"]), color="cyan",
                            fontsize=6 if lattice == "SL" else 8, ha="center", va="bottom",
                            xytext=(0, 4), textcoords="offset points", annotation_clip=False)
            target.plot(r["col"], r["row"], "o", mfc="none", mec="cyan", ms=5 if lattice == "SL" else 9,
                        mew=0.7, clip_on=False)
    if path is not None:
        save_figure(fig, path, dpi=110)
    return fig


def plot_ccf(delta_deg: np.ndarray, ccf: np.ndarray, *, ccf_model: np.ndarray | None = None,
             data_label: str = "measured", model_label: str = "forward model", title: str = "",
             ax=None):
    """A normalised CCF ``C(Delta)`` (Eq. 3) against the angle Delta, like one panel of Fig. 2a-e.

    Parameters
    ----------
    delta_deg : (n,) angles Delta (deg).
    ccf : (n,) the CCF of the input (normalised to [0, 1]), drawn solid red.
    ccf_model : (n,) optional CCF of a model, drawn dashed blue.
    data_label, model_label : legend entries; say what the input is ("measured scan",
        "simulated pattern") rather than calling every input an experiment.
    ax : matplotlib axes to draw into (default: a new Figure).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = new_axes(ax, figsize=(3.6, 3.0))
    ax.plot(delta_deg, ccf, "r-", lw=1.5, label=data_label)
    if ccf_model is not None:
        ax.plot(delta_deg, ccf_model, "b--", lw=1.2, label=model_label)
    ax.set_xlim(-180, 180)
    ax.set_xticks([-180, -90, 0, 90, 180])
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel(r"$\Delta$ (deg)")
    ax.set_ylabel(r"$C(\Delta)$ (normalised)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return fig


def plot_polar_fit(q: np.ndarray, chi_deg: np.ndarray, observed: np.ndarray, model: np.ndarray,
                   residual: np.ndarray, windows: list[tuple[str, float, float]], path: str | Path | None = None,
                   *, title: str = "", residual_label: str = "deviance residual", residual_limit: float = 5.0):
    """A frame's polar image beside its fit: observed | model | residual, one row per q window.

    Parameters
    ----------
    q : (n_q,) bin centres (1/A); chi_deg : (n_chi,) bin centres (deg).
    observed : (n_chi, n_q) mean counts per pixel of each bin (NaN: no valid pixel).
    model : (n_chi, n_q) the fitted model's counts per pixel (NaN where it is not evaluated).
    residual : (n_chi, n_q) residuals of the fit, e.g. signed Poisson deviance residuals
        (`fits.objective.deviance_residuals`; NaN where not fitted).
    windows : (label, q_min, q_max) per row, e.g. ``[("SAXS", 0.05, 0.25), ("WAXS", 1.7, 2.3)]``.
    path : also save the figure there.
    title : figure title (e.g. fitted against true orientation and lattice constant, status).
    residual_label : colour-bar label of the residual panels.
    residual_limit : residuals are shown on ``[-residual_limit, residual_limit]`` (clipped).

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    Observed and model share one logarithmic colour scale per row, so a misfit shows as a
    difference of colour; the q axis is logarithmic in the SAXS window (q_min < 0.5 1/A).
    """
    import matplotlib
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    q = np.asarray(q, float)
    chi = np.asarray(chi_deg, float)
    shape = (chi.size, q.size)
    images = [np.asarray(a, float) for a in (observed, model, residual)]
    for name, a in zip(("observed", "model", "residual"), images):
        if a.shape != shape:
            raise ValueError(f"plot_polar_fit: {name} has shape {a.shape}; expected (n_chi, n_q) = {shape}")
    if not windows:
        raise ValueError("plot_polar_fit: no q window given; pass e.g. [('SAXS', 0.05, 0.25)]")
    fig = Figure(figsize=(14.0, 3.9 * len(windows) + 0.5), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(windows), 3, squeeze=False))
    grey = "0.6"
    cmap = matplotlib.colormaps["inferno"].with_extremes(bad=grey)
    cmap_r = matplotlib.colormaps["RdBu_r"].with_extremes(bad=grey)
    for row, (label, q_lo, q_hi) in zip(axes, windows):
        cols = np.flatnonzero((q >= q_lo) & (q <= q_hi))
        if cols.size == 0:
            raise ValueError(f"plot_polar_fit: window {label!r} ({q_lo:g} .. {q_hi:g} 1/A) holds no q bin "
                             f"(q {q.min():.3g} .. {q.max():.3g} 1/A)")
        obs, mod, res = (a[:, cols] for a in images)
        pos = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in (obs, mod)])
        vmin = max(float(np.percentile(pos, 2)), 1e-3) if pos.size else 1e-3
        vmax = max(float(pos.max()), 10 * vmin) if pos.size else 1.0
        norm = LogNorm(vmin=vmin, vmax=vmax)
        qw = q[cols]
        for ax, img, what in zip(row[:2], (obs, mod), ("observed", "model")):
            mesh = ax.pcolormesh(qw, chi, np.ma.masked_invalid(np.clip(img, vmin, None)), cmap=cmap, norm=norm,
                                 shading="nearest")
            ax.set_title(f"{label}: {what}")
        fig.colorbar(mesh, ax=row[:2], label="counts/pixel", fraction=0.05, pad=0.01)
        mesh = row[2].pcolormesh(qw, chi, np.ma.masked_invalid(np.clip(res, -residual_limit, residual_limit)),
                                 cmap=cmap_r, vmin=-residual_limit, vmax=residual_limit, shading="nearest")
        row[2].set_title(f"{label}: residual")
        fig.colorbar(mesh, ax=row[2], label=residual_label, fraction=0.05, pad=0.01)
        for ax in row:
            if q_lo < 0.5:
                ax.set_xscale("log")
            ax.set_xlabel("q (1/Å)")
        row[0].set_ylabel("χ (deg)")
    if title:
        fig.suptitle(title, fontsize=10)
    if path is not None:
        save_figure(fig, path)
    return fig
