"""Tests of fits/scan/results.py: the /entry/fits schema, provenance and the resume rules."""
import h5py
import numpy as np
import pytest

from fits.scan import results as store
from fits.scan.settings import FitSettings
from fits.status import FitStatus
from xmodel.config import default_paths, load_config


def test_empty_results_follow_the_schema():
    r = store.empty_results(3)
    assert set(r) == set(store.ALL_DATASETS)
    assert r["orientation_matrix"].shape == (3, 3, 3) and r["zone_axis"].shape == (3, 3)
    assert np.all(r["status"] == FitStatus.FAILED.code) and list(r["message"]) == ["", "", ""]


def test_a_group_without_frames_is_replaced_and_one_with_frames_is_kept(tmp_path):
    """A run that stopped before its first batch (e.g. a bad argument) never blocks the rerun; one
    with frames done refuses other settings, naming them."""
    cfg = load_config(default_paths("red"))
    out, src = tmp_path / "fits.h5", tmp_path / "results.h5"
    a, b = FitSettings(), FitSettings.of(max_iter=30, neighbour_passes=0)
    assert store.prepare(out, 5, src, cfg, a) == 0
    assert store.prepare(out, 5, src, cfg, b) == 0                   # nothing done: replaced
    assert store.read_settings(out)["max_iter"] == 30
    rows = store.empty_results(2)
    rows["status"][:] = FitStatus.OK.code
    store.write_batch(out, 0, 2, rows)
    assert store.prepare(out, 5, src, cfg, b) == 2                   # same run: resumes
    assert store.progress(out) == (2, 0)
    with pytest.raises(ValueError, match=r"2 frames done\) that differs in fit\.max_iter \(stored 30, now 15\), "
                                         r"fit\.neighbour_passes \(stored 0, now 4\)"):
        store.prepare(out, 5, src, cfg, a)
    with pytest.raises(ValueError, match=r"run\.frames \(stored 5, now 6\)"):
        store.prepare(out, 6, src, cfg, b)
    assert store.prepare(out, 5, src, cfg, FitSettings.of(max_iter=30, neighbour_passes=0, cache_dir="x")) == 2
    with h5py.File(out, "r") as f:
        assert f["entry/fits/status"][:2].tolist() == [0, 0]
        assert f["entry/fits/lattice_constant"].attrs["units"] == "angstrom"
        assert f["entry/fits/tilt1_deg_stderr"].attrs["units"] == "degree"


def test_fits_of_an_older_version_are_not_resumed(tmp_path):
    out = tmp_path / "old.h5"
    with h5py.File(out, "w") as f:
        g = f.create_group("entry/fits")
        g.attrs["fingerprint"] = "results.h5|1.5|(0.85, 1.05)|..."
        g.attrs["frames_done"] = 3
    with pytest.raises(ValueError, match=r"3 frames done\) written by an older xmodel"):
        store.prepare(out, 5, tmp_path / "results.h5", load_config(default_paths("red")), FitSettings())


def test_refined_widths_get_maps_and_held_ones_do_not(tmp_path):
    """The maps of a fit that refines the SL widths include them (a grain's Scherrer size across
    the scan); a fit that holds them maps only the default datasets."""
    from types import SimpleNamespace

    from fits.scan.settings import DEFAULT_VARY
    cfg = load_config(default_paths("red"))
    scan = SimpleNamespace(grid=object(), map_axes=lambda: [("y", np.arange(2.0), "um", "y"),
                                                            ("x", np.arange(3.0), "um", "x")],
                           map_image=lambda v: np.asarray(v).reshape(2, 3))
    for name, vary, want in (("held.h5", DEFAULT_VARY, False),
                             ("refined.h5", (*DEFAULT_VARY, "sl_radial_width", "mosaic_deg"), True)):
        out = tmp_path / name
        store.prepare(out, 6, tmp_path / "results.h5", cfg, FitSettings.of(vary=vary))
        rows = store.empty_results(6)
        rows["sl_radial_width"][:] = np.linspace(1e-3, 3e-3, 6)
        store.write_batch(out, 0, 6, rows)
        store.write_maps(out, scan)
        with h5py.File(out, "r") as f:
            maps = f["entry/fits/maps"]
            assert ("sl_radial_width" in maps and "mosaic_deg" in maps) is want
            assert "al_radial_width" not in maps
            if want:
                np.testing.assert_allclose(maps["sl_radial_width/sl_radial_width"][()].ravel(), rows["sl_radial_width"])
                assert maps["sl_radial_width/sl_radial_width"].attrs["units"] == "1/angstrom"
