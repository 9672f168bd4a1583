"""Tests of the demo's realistic-frame report (xmodel/demo.py): the observed | model | residual
figure and the table row with the fitted against the true orientation and lattice constant.

The stage's other steps are tested where they live: the rendered frame is the synth's frame
(tests/xmodel/test_realspace.py), the reduction and the scan fit in their own tests."""
import numpy as np
import pytest

from fits.status import FitStatus
from xmodel import orientation
from xmodel.demo import RealisticFit, Report, report_realistic_frame
from xmodel.figures import plot_polar_fit


def _fit(rng) -> RealisticFit:
    q = np.geomspace(0.05, 2.4, 90)
    chi = np.linspace(-178.0, 178.0, 90)
    polar = rng.poisson(5.0, (chi.size, q.size)).astype(float)
    model = np.where(((q > 0.07) & (q < 0.25)) | ((q > 1.7) & (q < 2.3)), 5.0, np.nan) * np.ones_like(polar)
    residual = np.where(np.isfinite(model), (polar - model) / np.sqrt(5.0), np.nan)
    R_true = np.asarray(orientation.base_orientation([1, 1, 0], [0, 0, 1]), float)
    c, s = np.cos(np.radians(2.0)), np.sin(np.radians(2.0))
    R_fit = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ R_true      # 2 deg about the beam
    row = {"status": np.array([FitStatus.MIXED.code]), "orientation_matrix": R_fit[None],
           "lattice_constant": np.array([151.5]), "configuration": np.array(["conf2"]),
           "message": np.array(["peaks of a second orientation remain after the fit"])}
    c, s = np.cos(np.radians(0.5)), np.sin(np.radians(0.5))
    R_grains = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ R_true    # the grains 0.5 deg about it
    truth = {"label_name": "orange", "orientation_matrix": R_true, "grain_orientation_matrix": R_grains,
             "lattice_constant": 150.0, "grain_lattice_constant": 150.75,
             "configuration": "conf1", "boundary_distance_um": 2.05}
    return RealisticFit(point=39, twin="twin_realistic_demo.toml", truth=truth, row=row, q=q, chi_deg=chi,
                        polar=polar, model=model, residual=residual,
                        windows=[("SAXS", 0.07, 0.25), ("WAXS", 1.7, 2.3)], seconds=1.0)


def test_realistic_frame_report_writes_the_figure_and_the_row(tmp_path):
    rep = Report(tmp_path)
    r = report_realistic_frame(tmp_path, rep, _fit(np.random.default_rng(0)))
    text = rep.write().read_text()
    assert r["figure"] == tmp_path / "realistic_frame.png" and r["figure"].stat().st_size > 10_000
    assert r["orientation_error_deg"] == pytest.approx(2.0, abs=1e-6) and r["a_error_pct"] == pytest.approx(1.0)
    assert r["grains_error_deg"] == pytest.approx(1.5, abs=1e-6)
    assert r["a_grains_error_pct"] == pytest.approx(100 * (151.5 / 150.75 - 1))
    assert ("| realistic frame (orange, point 39) | 2.00 | 1.50 | 151.5 / 150.0 | +1.00 | +0.50 | conf2 / conf1 "
            "| mixed |") in text
    assert "shares no code with the model" in text and "farthest from an empty area (2.0 um" in text
    assert "![realistic frame](realistic_frame.png)" in text


def test_polar_fit_figure_errors_name_the_argument():
    f = _fit(np.random.default_rng(1))
    with pytest.raises(ValueError, match=r"window 'far' \(5 .. 6 1/A\) holds no q bin"):
        plot_polar_fit(f.q, f.chi_deg, f.polar, f.model, f.residual, [("far", 5.0, 6.0)])
    with pytest.raises(ValueError, match=r"model has shape \(90, 89\); expected \(n_chi, n_q\) = \(90, 90\)"):
        plot_polar_fit(f.q, f.chi_deg, f.polar, f.model[:, 1:], f.residual, f.windows)
