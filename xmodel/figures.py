"""Figures of detector patterns (like the paper's Fig. 2f-j and S4)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402


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


def plot_pattern(image: np.ndarray, mask: np.ndarray, beam_center: tuple[float, float], path: str | Path, *,
                 reflections: list[dict] | None = None, title: str = "", saxs_half_width: float = 220,
                 max_labels: int = 40) -> Path:
    """Detector image on a log scale with the SAXS region enlarged as an inset.

    Parameters
    ----------
    image : (rows, cols) counts; masked pixels are shown grey.
    beam_center : (row, col) of the direct beam in pixels (centre of the inset).
    reflections : rows of `xmodel.peaks.reflection_table`; AL reflections are labelled on the
        main image, SL reflections in the inset.
    saxs_half_width : half size of the inset region (pixels).
    """
    path = Path(path)
    img = np.asarray(image, float)
    valid = ~np.asarray(mask, bool) & np.isfinite(img)
    pos = img[valid & (img > 0)]
    vmin = max(np.percentile(pos, 5), 1e-3) if pos.size else 1e-3
    vmax = max(pos.max(), vmin * 10) if pos.size else 1.0
    shown = np.ma.masked_array(np.clip(img, vmin, None), ~valid)
    cmap = matplotlib.colormaps["inferno"].with_extremes(bad="0.6")
    norm = LogNorm(vmin=vmin, vmax=vmax)

    fig, ax = plt.subplots(figsize=(8.2, 8))
    im = ax.imshow(shown, cmap=cmap, norm=norm, interpolation="antialiased", origin="upper")
    ax.set_xlabel("column (pixel)")
    ax.set_ylabel("row (pixel)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="counts")
    r0, c0 = beam_center
    h = saxs_half_width
    rows, cols = img.shape
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
    for r in (reflections or [])[: 10 * max_labels]:
        if not r.get("on_detector", True):
            continue
        target = inset if r["lattice"] == "SL" else ax
        if r["lattice"] == "SL" and not (box[0] <= r["row"] < box[1] and box[2] <= r["col"] < box[3]):
            continue
        target.annotate(miller_label(r["hkl"], r["lattice"]), (r["col"], r["row"]), color="cyan",
                        fontsize=6 if r["lattice"] == "SL" else 8, ha="center", va="bottom",
                        xytext=(0, 4), textcoords="offset points")
        target.plot(r["col"], r["row"], "o", mfc="none", mec="cyan", ms=5 if r["lattice"] == "SL" else 9, mew=0.7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
