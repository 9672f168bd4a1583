"""Figures: notebook-safe (no backend switch), axes in, Figure out, honest labels."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from xmodel import figures, maps

REPO = Path(__file__).resolve().parents[2]


def test_importing_xmodel_and_fits_keeps_the_matplotlib_backend():
    """A notebook's backend survives importing every plotting module of xmodel and fits."""
    code = ("import matplotlib\nmatplotlib.use('svg')\nimport importlib, pkgutil, xmodel, fits\n"
            "for pkg in (xmodel, fits):\n"
            "    for m in pkgutil.iter_modules(pkg.__path__):\n"
            "        importlib.import_module(pkg.__name__ + '.' + m.name)\n"
            "import xmodel.commands.simulate, xmodel.commands.classify, xmodel.commands.ccf\n"
            "print(matplotlib.get_backend())")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": ""}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().lower() == "svg"


def _pattern():
    """A 60 x 80 detector: flat background 10, one bright spot at (20, 30), q = distance / 100."""
    rows, cols = np.mgrid[:60, :80]
    q = np.hypot(rows - 50.0, cols - 5.0) / 100.0
    image = np.full((60, 80), 10.0)
    image[19:22, 29:32] = 200.0
    return image, np.zeros(image.shape, bool), q


def _row(hkl, row, col, q, ewald, lattice="AL"):
    return dict(lattice=lattice, hkl=hkl, q=q, chi=0.0, row=row, col=col, intensity=1.0,
                ewald_distance=ewald, on_detector=True)


def test_saving_domain_maps_and_ccfs_keeps_the_matplotlib_backend(tmp_path):
    """The analyses' figure writers draw on a Figure without pyplot: the backend is not switched."""
    import matplotlib

    from fits.analyses.classify import plot_label_maps
    from fits.analyses.xcca import plot_ccfs

    before = matplotlib.get_backend()
    lab = np.array([-1, 0, 1, 0, 1, 1])
    plot_label_maps({"SAXS": lab}, ["red", "purple"], (2, 3), tmp_path / "maps.png")
    delta = np.linspace(-180.0, 180.0, 73)
    plot_ccfs([{"title": "red", "delta_deg": delta, "ccf": np.cos(np.radians(delta)) ** 2}], tmp_path / "ccf.png")
    assert (tmp_path / "maps.png").stat().st_size > 0 and (tmp_path / "ccf.png").stat().st_size > 0
    assert matplotlib.get_backend() == before


def test_labels_only_visible_reflections_near_the_ewald_sphere():
    image, mask, q = _pattern()
    q_spot = float(q[20, 30])
    rows = [_row([2, 0, 0], 20, 30, q_spot, 0.0),                # on the spot, on the sphere
            _row([0, 0, -2], 40, 60, float(q[40, 60]), 0.0),     # on the sphere, but nothing there
            _row([1, 1, 1], 20, 30, q_spot, 0.5 * q_spot),      # bright pixel, far off the sphere
            _row([1, 1, -1], -5, 30, q_spot, 0.0)]               # just above the detector edge
    kept = figures.visible_reflections(rows, image, mask, q)
    assert [r["hkl"] for r in kept] == [[2, 0, 0]]
    assert kept[0]["contrast"] == pytest.approx(200.0 / 10.0)
    image[0:2, 29:32] = 200.0                                    # the arc reaches onto the detector
    kept = figures.visible_reflections(rows, image, mask, q)
    assert [r["hkl"] for r in kept] == [[2, 0, 0], [1, 1, -1]] and kept[1]["row"] == 0.0


def test_plot_pattern_draws_into_given_axes_with_q_rings(tmp_path):
    image, mask, q = _pattern()
    fig = Figure()
    ax = fig.add_subplot()
    out = figures.plot_pattern(image, mask, (50, 5), ax=ax, q=q, title="t",
                               reflections=[_row([2, 0, 0], 20, 30, float(q[20, 30]), 0.0)])
    assert out is fig
    texts = [t.get_text() for t in ax.texts]
    assert any("1/Å" in t for t in texts)                        # labelled q rings
    assert any(r"\overline" not in t and "200" in t for t in texts)
    with pytest.raises(ValueError, match="q has shape"):
        figures.plot_pattern(image, mask, (50, 5), q=q[:10])
    fig2 = figures.plot_pattern(image, mask, (50, 5), tmp_path / "p.png")
    assert isinstance(fig2, Figure) and (tmp_path / "p.png").stat().st_size > 5000


def test_ccf_legend_names_the_input():
    delta = np.linspace(-180, 180, 37)
    fig = figures.plot_ccf(delta, np.ones(37), ccf_model=np.zeros(37), data_label="pattern y.h5")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["pattern y.h5", "forward model"] and "experiment" not in " ".join(labels)


def test_maps_in_micrometres_with_a_visible_empty_entry():
    pos = np.stack(np.meshgrid(np.arange(3) * 0.5 + 1.0, np.arange(4) * 0.25, indexing="ij"), -1)
    pos = pos.reshape(-1, 2)                                       # (y, x) order, x fast
    x, y = maps.scan_axes(pos, (3, 4))
    np.testing.assert_allclose(x, [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(y, [1.0, 1.5, 2.0])
    assert maps.scan_axes(pos[:5], (3, 4)) is None
    labels = np.array([0, 1, -1, -2] * 3)
    fig = maps.plot_label_maps({"label": labels}, ["red", "blue"], ["r", "b"], (3, 4), x_um=x, y_um=y)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x (µm)" and ax.get_ylabel() == "y (µm)"
    assert ax.images[0].get_extent() == pytest.approx([-0.125, 0.875, 2.25, 0.75])
    legend = fig.legends[0]
    entries = {t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles)}
    assert list(entries) == ["empty", "mixed", "red", "blue"]
    assert entries["empty"].get_edgecolor()[:3] != entries["empty"].get_facecolor()[:3]   # outlined


def test_map_without_positions_has_integer_index_ticks():
    fig = maps.plot_map(np.arange(6.0), (2, 3), title="m")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "scan column"
    assert all(float(t).is_integer() for t in ax.get_xticks())
