"""Fault injection, fit stage (`fits.scan`, ``xmodel fit``): every bad setting and option is an
error naming the key or option, the value and the valid range; a results file that does not fit
the scan is refused with a clear message; bad frames and a batch that raises are flagged per
frame; a full disk mid-run and kills at every stage leave a checkpoint from which the rerun gives
the results of an uninterrupted run (compared NaN-aware, every dataset of ``/entry/fits``).

Each row of the tables is one distinct fault; messages are pinned with ``match=``. The runs use
a 2 x 2 scan on the coarse polar grid of tests/fits/scan (two red patterns, a weak one and an
empty one), one batch per frame and two neighbour passes, the first of which changes a frame.
"""
from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from fits.scan import driver, neighbours
from fits.scan import results as store
from fits.scan.driver import fit_scan
from fits.scan.results import ALL_DATASETS, read_fits
from fits.scan.settings import FitSettings, key_index, settings_from_config
from fits.scan.setup import setup_from_reduction
from fits.status import FitStatus
from xmodel.cli import main
from xmodel.config import default_paths, load_config
from xmodel.noise import poisson_counts
from xmodel.parameters import params_from_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [str(p) for p in default_paths("red")]
CHI = np.arange(180) * 2.0 - 179.0
Q = np.concatenate([np.geomspace(0.06, 0.24, 80), np.geomspace(1.72, 2.3, 24)])
#: the runs' settings as the command line gives them: a checkpoint per frame, a cheap re-search
SETS = ["fit.batch=1", "fit.grid_step=0.5", "fit.neighbour_passes=2"]


class Killed(BaseException):
    """A kill at a chosen point (not an Exception: nothing in the fit may catch it)."""


def _reduction(path: Path, polar: np.ndarray, positions: bool = True) -> Path:
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["polar"] = np.asarray(polar, np.float32)
        g["q"], g["chi"] = Q, CHI
        if positions:
            g["positions"] = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])[:len(polar)]
    return path


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """The 2 x 2 scan, its setup (built as `xmodel fit` builds it) and an uninterrupted run."""
    tmp = tmp_path_factory.mktemp("fitfaults")
    cfg = load_config(CONFIGS, SETS)
    settings = settings_from_config(cfg)
    path = _reduction(tmp / "scan.h5", np.zeros((4, CHI.size, Q.size)))
    setup = setup_from_reduction(path, cfg, settings)
    p = params_from_config(cfg)

    def frame(sl_scale: float, seed: int) -> np.ndarray:
        mu = np.asarray(setup.model(p.replace(sl_scale=sl_scale, diffuse_scale=45.0, al_scale=20.0,
                                              background=0.05)), float)
        img = np.full(CHI.size * Q.size, np.nan)
        img[setup.index] = poisson_counts(mu, seed=seed)
        return img.reshape(CHI.size, Q.size)

    frames = np.stack([frame(3000.0, 0), frame(3000.0, 11), frame(200.0, 4), frame(0.0, 5)])
    with h5py.File(path, "a") as f:
        f["entry/reduction/polar"][...] = frames
    reference = fit_scan(path, cfg, tmp / "reference.h5", settings, progress=False, setup=setup)
    return {"tmp": tmp, "cfg": cfg, "settings": settings, "path": path, "setup": setup, "frames": frames, "reference": reference}


def assert_same_fits(a: Path, b: Path) -> None:
    """Every per-frame dataset, the maps and the progress of two runs agree (NaN = NaN)."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        ga, gb = fa[store.FITS], fb[store.FITS]
        for k in ALL_DATASETS:
            np.testing.assert_array_equal(ga[k][()], gb[k][()], err_msg=k)
        for k in ("frames_done", "neighbour_passes_done", "neighbour_changed"):
            assert ga.attrs[k] == gb.attrs[k], k
        assert sorted(ga["maps"]) == sorted(gb["maps"])
        for k in ga["maps"]:
            np.testing.assert_array_equal(ga["maps"][k][k][()], gb["maps"][k][k][()], err_msg=k)
        assert store.UNDO not in ga and store.UNDO not in gb


# --- [fit] settings in a TOML file and by --set -----------------------------------------------

SETTING_FAULTS = [
    # wrong types
    ('batch = "16"', (r'fit.batch = "16" \(a string\) in .*fit.toml: expected an integer >= 1 and <= 4096 '
                     r'\(frames\); the default is 16')),
    ("batch = 1.5", r"fit.batch = 1.5 \(a float\) .*expected an integer >= 1"),
    ("batch = true", r"fit.batch = true \(a boolean\) .*expected an integer"),
    ("max_iter = [15]", r"fit.max_iter = \[15\] \(a list of 1 item\) .*expected an integer >= 1 and <= 10000"),
    ("step_deg = {value = 1.5}", r"fit.step_deg = \{value = 1.5\} \(a table\) .*expected a finite number"),
    ('step_deg = "1.5 deg"', r'fit.step_deg = "1.5 deg" \(a string\) .*a finite number >= 0.5 and <= 10 \(deg\)'),
    ('vary = "tilt1_deg"', r'fit.vary = "tilt1_deg" \(a string\) .*expected a list of parameter names'),
    ("vary = [1, 2]", r"fit.vary = \[1, 2\] .*expected a list of parameter names"),
    ('vary = ["tilt1", "lattice_constant"]', r"\['tilt1'\] are not fit parameters \(valid: \['lattice_constant'"),
    ('vary = ["tilt1_deg", "tilt1_deg"]', r"\['tilt1_deg'\] listed more than once"),
    ("vary = []", r"fit.vary = \[\] .*expected a list of parameter names"),
    ("a_range_rel = 0.9", r"fit.a_range_rel = 0.9 \(a float\) .*two finite numbers \[lo, hi\] with 0.5 <= lo < hi <= 2"),
    ("a_range_rel = [1.05, 0.85]", (r"fit.a_range_rel = \[1.05, 0.85\] .*with 0.5 <= lo < hi <= 2 \(of the config's "
                                   r"superlattice.lattice_constant\); the default is \[0.85, 1.05\]")),
    ("a_range_rel = [0.85, 1.0, 1.05]", r"fit.a_range_rel = \[0.85, 1.0, 1.05\] \(a list of 3 items\)"),
    ("a_range_rel = [0.85, nan]", r"fit.a_range_rel = \[0.85, nan\] .*two finite numbers"),
    ("zones = [[0, 0, 0]]", r"fit.zones = \[\[0, 0, 0\]\] .*a list of \[zone_axis\] or \[zone_axis, reference\]"),
    ('line_preference = [["ok"], ["done"]]', r"unknown fit status names \['done'\]"),
    ("cache_dir = 3", r"fit.cache_dir = 3 \(an integer\) .*expected a folder path"),
    # out of range, non-finite, huge
    ("batch = 0", r"fit.batch = 0 \(an integer\) .*expected an integer >= 1 and <= 4096 \(frames\)"),
    ("batch = -16", r"fit.batch = -16 .*>= 1"),
    ("batch = 1000000", r"fit.batch = 1000000 .*<= 4096"),
    ("max_iter = 0", r"fit.max_iter = 0 .*expected an integer >= 1 and <= 10000; the default is 15"),
    ("max_iter = 9223372036854775807", r"fit.max_iter = 9223372036854775807 \(an integer\) .*<= 10000"),
    ("step_deg = 0", r"fit.step_deg = 0 .*>= 0.5 and <= 10 \(deg\)"),
    ("step_deg = nan", r"fit.step_deg = nan \(a float\) .*expected a finite number"),
    ("step_deg = inf", r"fit.step_deg = inf .*expected a finite number"),
    ("refine_step_deg = 1e-9", r"fit.refine_step_deg = 1e-09 .*>= 0.05 and <= 10 \(deg\)"),
    ("tol = 0", r"fit.tol = 0 .*> 0 and <= 1"),
    ("al_min_gain = -1", r"fit.al_min_gain = -1 .*>= 0 \(deviance / dispersion\)"),
    ("al_min_gain = nan", r"fit.al_min_gain = nan .*expected a number \(or inf\) >= 0"),
    ("scale_floor = inf", r"fit.scale_floor = inf .*expected a finite number > 0 \(counts\)"),
    ("mixed_ratio = nan", r"fit.mixed_ratio = nan .*a number \(or inf\) >= 0"),
    ("agree_share = 1.5", r"fit.agree_share = 1.5 .*>= 0 and <= 1"),
    ("agree_deg = 0", r"fit.agree_deg = 0 .*> 0 and <= 180 \(deg\)"),
    ("neighbour_passes = -1", r"fit.neighbour_passes = -1 .*>= 0 and <= 100"),
    ("neighbour_radius_steps = 1", r"fit.neighbour_radius_steps = 1 .*> 1 and <= 10 \(scan steps\)"),
    ("grid_step = 0", r"fit.grid_step = 0 .*>= 0.001 and <= 0.5 \(relative\)"),
    ("lattice_grid_points = 1e9", r"fit.lattice_grid_points = 1000000000.0 \(a float\) .*<= 100000"),
    ("ring_sigma_q = 1e300", r"fit.ring_sigma_q = 1e\+300 .*> 0 and <= 0.05 \(1/A\)"),
    ("width_factor = 0.5", r"fit.width_factor = 0.5 .*>= 1 and <= 10"),
    ("scale_floor = 0", r"fit.scale_floor = 0 .*> 0 \(counts\)"),
    # spelling
    ("batch_size = 16", r"unknown fit setting 'batch_size' in .*fit.toml\. Did you mean fit\.batch"),
    ("max_iters = 15", r"Did you mean fit\.max_iter\?"),
]


@pytest.mark.parametrize("line, match", SETTING_FAULTS, ids=[row[0] for row in SETTING_FAULTS])
def test_bad_fit_setting_in_a_file(tmp_path, line, match):
    toml = tmp_path / "fit.toml"
    toml.write_text(f"[fit]\n{line}\n")
    with pytest.raises(ValueError, match=match):
        settings_from_config(load_config([*CONFIGS, toml]))


@pytest.mark.parametrize("override, match", [
    ("fit.batch=0", r"fit.batch = 0 \(an integer\) in --set fit.batch=0: expected an integer >= 1"),
    ("fit.conf_margin=-inf", (r"fit.conf_margin = -inf \(a float\) in --set fit.conf_margin=-inf: expected a "
                             r"number \(or inf\) >= 0")),
    ("fit.step_deg='fine'", r'fit.step_deg = "fine" \(a string\) in --set fit.step_deg=\'fine\''),
])
def test_bad_fit_setting_by_set(override, match):
    with pytest.raises(ValueError, match=match):
        settings_from_config(load_config(CONFIGS, [override]))


def test_every_number_setting_is_finite_unless_it_says_so():
    """inf is a value only of the thresholds and margins (never; always for conf_margin); of a
    width, step, factor or share it is refused."""
    for key, (_, spec) in key_index().items():
        if spec.kind != "number":
            continue
        if spec.inf:
            assert FitSettings.of(**{key: "inf"})
        else:
            with pytest.raises(ValueError, match=rf"fit\.{key} = inf .*expected a finite number"):
                FitSettings.of(**{key: float("inf")})


# --- options of xmodel fit -------------------------------------------------------------------

@pytest.fixture
def tiny(tmp_path) -> Path:
    """A reduced scan that no run gets to fit: the options are refused first."""
    return _reduction(tmp_path / "tiny.h5", np.zeros((4, 2, 2)))


OPTION_FAULTS = [
    (["--batch-size", "0"], (r"fit.batch \(--batch-size\) = 0 on the command line: expected an integer >= 1 and "
                            r"<= 4096 \(frames\); the default is 16\.")),
    (["--batch-size", "-8"], r"fit.batch \(--batch-size\) = -8 on the command line"),
    (["--batch-size", "100000"], r"fit.batch \(--batch-size\) = 100000 .*<= 4096"),
    (["--batch-size", "9" * 50], r"fit.batch \(--batch-size\) = 999999999999... \(50 digits\) on the command"),
    (["--step-deg", "0"], (r"fit.step_deg \(--step-deg\) = 0.0 on the command line: expected a finite number "
                          r">= 0.5 and <= 10 \(deg\); the default is 1.5\.")),
    (["--step-deg", "nan"], r"fit.step_deg \(--step-deg\) = nan"),
    (["--step-deg", "inf"], r"fit.step_deg \(--step-deg\) = inf"),
    (["--step-deg", "-1.5"], r"fit.step_deg \(--step-deg\) = -1.5"),
    (["--step-deg", "1e400"], r"fit.step_deg \(--step-deg\) = inf"),
    (["--max-iter", "0"], r"fit.max_iter \(--max-iter\) = 0 .*>= 1 and <= 10000; the default is 15"),
    (["--max-iter", "10000000000000"], r"fit.max_iter \(--max-iter\) = 10000000000000 .*<= 10000"),
    (["--q-bins", "0"], r"q_bins \(--q-bins\) = 0: expected an integer >= 1 and <= 10000, e.g. 500"),
    (["--q-bins", "-500"], r"q_bins \(--q-bins\) = -500"),
    (["--chi-bins", "0"], r"chi_bins \(--chi-bins\) = 0: expected an integer >= 1 and <= 3600, e.g. 360"),
    (["--chi-bins", "1000000"], r"chi_bins \(--chi-bins\) = 1000000"),
    (["--set", "fit.batch=0"], r"fit.batch = 0 \(an integer\) in --set fit.batch=0"),
    (["--set", "fit.batchsize=4"], (r"unknown fit setting 'batchsize' in --set fit.batchsize=4\. "
                                   r"Did you mean fit\.batch\?")),
]


@pytest.mark.parametrize("extra, match", OPTION_FAULTS, ids=[" ".join(r[0])[:30] for r in OPTION_FAULTS])
def test_bad_fit_option_exits_3_before_writing(tiny, tmp_path, capsys, extra, match):
    out = tmp_path / "fits.h5"
    assert main(["fit", str(tiny), *CONFIGS, "--out", str(out), *extra]) == 3
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert err.startswith("xmodel fit: error: ") and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("extra, match", [
    (["--batch-size", "1.5"], r"argument --batch-size: invalid int value: '1.5'"),
    (["--step-deg", "fine"], r"argument --step-deg: invalid float value: 'fine'"),
    (["--q-bins", "5e2"], r"argument --q-bins: invalid int value: '5e2'"),
])
def test_option_of_the_wrong_type_is_a_usage_error(tiny, tmp_path, capsys, extra, match):
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(tiny), *CONFIGS, "--out", str(tmp_path / "fits.h5"), *extra])
    assert exc.value.code == 2 and re.search(match, capsys.readouterr().err)


@pytest.mark.parametrize("make, match", [
    (lambda p: p.mkdir(), r"fits is a folder; pass a Dectris <name>_master.h5 or a results file"),
    (lambda p: p.write_text("not hdf5"), r"fits is not an HDF5 file \(no HDF5 signature"),
    (lambda p: None, r"fits does not exist; pass a Dectris"),
])
def test_fit_input_that_is_no_scan(tmp_path, capsys, make, match):
    src = tmp_path / "fits"
    make(src)
    assert main(["fit", str(src), *CONFIGS, "--out", str(tmp_path / "o.h5")]) == 3
    assert re.search(match, capsys.readouterr().err)


def test_help_on_q_binning_is_true(tmp_path, monkeypatch, capsys):
    """`xmodel fit MASTER` reduces with linearly spaced q bins, as its help says (unlike `xmodel
    reduce`, whose default is log-spaced)."""
    from xmodel.cli import build_parser
    from xmodel.dectris import write_scan
    from xmodel.geometry import Geometry

    text = " ".join(build_parser()._subparsers._group_actions[0].choices["fit"].format_help().split())
    assert "q bins when reducing a master file, linearly spaced over the valid pixels" in text
    geo = Geometry(dist=0.05, poni1=30.3 * 75e-6, poni2=20.7 * 75e-6, rot1=0.0, rot2=0.0, rot3=0.0,
                   wavelength=0.898e-10, pixel1=75e-6, pixel2=75e-6, shape=(60, 50), detector_name="")
    frames = np.random.default_rng(1).poisson(4.0, (2, 60, 50)).astype(np.uint32)
    master = write_scan(tmp_path / "raw", "s", iter(frames), 2, geo, positions_um=np.zeros((2, 2)), pixel_mask=None)
    monkeypatch.setattr("fits.scan.driver.fit_scan", lambda *a, **k: None)      # the reduction is the point
    out = tmp_path / "fits.h5"
    assert main(["fit", str(master), *CONFIGS, "--out", str(out), "--q-bins", "40", "--chi-bins", "8", "-q"]) == 0
    with h5py.File(tmp_path / "fits_reduced.h5", "r") as f:
        edges = f["entry/reduction/q_edges"][()]
    assert edges.size == 41
    np.testing.assert_allclose(np.diff(edges), np.diff(edges)[0], rtol=1e-9)
    assert capsys.readouterr().out == ""


# --- results files that do not fit the scan --------------------------------------------------

def _prepared(tmp_path, n: int = 4) -> tuple[Path, Path, object, FitSettings]:
    cfg = load_config(CONFIGS)
    src = _reduction(tmp_path / "red.h5", np.zeros((n, 2, 2)))
    out = tmp_path / "fits.h5"
    settings = FitSettings.of(batch=2)
    store.prepare(out, n, src, cfg, settings)
    rows = store.empty_results(2)
    store.write_batch(out, 0, 2, rows)
    return src, out, cfg, settings


def _set_attr(key, value):
    def edit(g):
        g.attrs[key] = value
    return edit


def _reshape(key, shape):
    def edit(g):
        del g[key]
        g.create_dataset(key, shape=shape, dtype=np.float64)
    return edit


def _delete(key):
    def edit(g):
        del g[key]
    return edit


FITS_FILE_FAULTS = [
    (_set_attr("frames_done", 7), (r"/entry/fits is damaged: it records frames_done = 7, but the scan has 4 frames "
                                  r"\(expected 0 to 4\); the file was cut short or edited\. Delete /entry/fits")),
    (_set_attr("frames_done", 2.5), r"frames_done = 2.5, but the scan has 4 frames"),
    (_set_attr("frames_done", "two"), r"frames_done = 'two'"),
    (_reshape("lattice_constant", (3,)), r"the dataset 'lattice_constant' has shape \(3,\), expected \(4,\) for 4 frames"),
    (_reshape("orientation_matrix", (4, 3)), r"'orientation_matrix' has shape \(4, 3\), expected \(4, 3, 3\)"),
    (_delete("status"), r"/entry/fits is damaged: the dataset 'status' is missing"),
    (_set_attr("neighbour_passes_done", -2), r"neighbour_passes_done = -2 \(expected an integer >= 0\)"),
    (_set_attr("settings_fingerprint", "{not json"), r"its attribute 'settings_fingerprint' is not JSON"),
]


@pytest.mark.parametrize("edit, match", FITS_FILE_FAULTS, ids=[m[:30] for _, m in FITS_FILE_FAULTS])
def test_fits_group_that_does_not_fit_the_scan_is_refused(tmp_path, edit, match):
    src, out, cfg, settings = _prepared(tmp_path)
    with h5py.File(out, "a") as f:
        edit(f[store.FITS])
    with pytest.raises(ValueError, match=match):
        fit_scan(src, cfg, out, settings, progress=False)


@pytest.mark.parametrize("extra, match", [
    (["--batch-size", "4"], r"differs in fit\.batch \(stored 2, now 4\); rerun with the same settings to resume"),
    (["--batch-size", "2", "--max-iter", "30"], r"differs in fit\.max_iter \(stored 15, now 30\)"),
    (["--batch-size", "2", "--set", "superlattice.lattice_constant=140"],
     r"differs in config\.superlattice\.lattice_constant \(stored 1\d\d\.\d+, now 140\.0\)"),
])
def test_resume_with_other_options_is_refused_on_the_command_line(tmp_path, capsys, extra, match):
    """tests/fits/scan/test_driver.py and test_results.py refuse other settings in the library;
    on the command line the refusal is exit code 3 with the keys and both values, the frames kept."""
    src, out, _, _ = _prepared(tmp_path)
    assert main(["fit", str(src), *CONFIGS, "--out", str(out), *extra]) == 3
    err = capsys.readouterr().err
    assert re.search(r"already holds /entry/fits of another run \(2 frames done\) that " + match, err), err
    assert store.progress(out) == (2, 0)


def test_fits_path_holding_a_dataset_is_refused(tmp_path):
    src = _reduction(tmp_path / "red.h5", np.zeros((4, 2, 2)))
    out = tmp_path / "fits.h5"
    with h5py.File(out, "w") as f:
        f["entry/fits"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"/entry/fits is a dataset, not the group of a scan fit"):
        fit_scan(src, load_config(CONFIGS), out, progress=False)


@pytest.mark.parametrize("make, match", [
    (lambda p: p.write_bytes(b"\x00" * 64), r"fits.h5 exists but is not an HDF5 file; choose another --out"),
    (lambda p: p.mkdir(), r"fits.h5 is a folder, but the fits go to an HDF5 file; give a file name, e.g. --out "),
])
def test_fits_output_that_is_no_hdf5_file(tmp_path, make, match):
    src = _reduction(tmp_path / "red.h5", np.zeros((4, 2, 2)))
    make(tmp_path / "fits.h5")
    with pytest.raises(OSError, match=match):
        fit_scan(src, load_config(CONFIGS), tmp_path / "fits.h5", progress=False)


@pytest.mark.parametrize("make, match", [
    (lambda f: f.create_group("entry"), r"is not a reduced scan \(no /entry/reduction/polar\)"),
    (lambda f: f.create_group("entry/fits").attrs.update(frames_done=4), r"is not a reduced scan"),
])
def test_results_file_that_is_not_a_reduction(tmp_path, make, match):
    path = tmp_path / "results.h5"
    with h5py.File(path, "w") as f:
        make(f)
    with pytest.raises(ValueError, match=match):
        fit_scan(path, load_config(CONFIGS), tmp_path / "fits.h5", progress=False)


# --- bad frames and a batch that raises: flagged per frame, the scan goes on ------------------

def test_bad_frames_are_flagged_and_the_scan_goes_on(scan, tmp_path, monkeypatch, caplog):
    """A good frame, an all-NaN (fully masked) one, an all-inf one, one without counts and a good
    one whose batch raises: each gets its status and message, the good one its fit."""
    frames = scan["frames"]
    marked = frames[0].copy()                     # frame 4: frame 0 with one fit bin masked, to know it by
    k = int(np.flatnonzero(np.isfinite(marked))[0])
    marked.flat[k] = np.nan
    bad = np.stack([frames[0], np.full_like(frames[0], np.nan), np.where(np.isfinite(frames[0]), np.inf, np.nan),
                    np.where(np.isfinite(frames[0]), 0.0, np.nan), marked])
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["polar"], g["q"], g["chi"] = bad.astype(np.float32), Q, CHI
    real = driver.fit_frames

    def raising(polar, setup, settings, **kw):
        # the batch of frame 4 (one frame per batch; batches may run side by side, in any order)
        if np.isnan(polar[0].flat[k]) and np.isfinite(polar[0]).any():
            raise FloatingPointError("injected: the refinement blew up")
        return real(polar, setup, settings, **kw)

    monkeypatch.setattr(driver, "fit_frames", raising)
    out = fit_scan(path, scan["cfg"], tmp_path / "fits.h5", scan["settings"], progress=False, setup=scan["setup"])
    r = read_fits(out)
    status = [FitStatus.from_code(int(c)) for c in r["status"]]
    assert status == [FitStatus.OK, FitStatus.BAD_DATA, FitStatus.BAD_DATA, FitStatus.NO_SIGNAL,
                      FitStatus.FAILED], list(r["message"])
    n_points = scan["setup"].index.size
    assert r["message"][1] == ("frame has non-finite or negative counts: no data: every fit point is masked or "
                               "NaN in this frame")
    assert r["message"][2] == f"frame has non-finite or negative counts: {n_points} fit points infinite"
    assert r["message"][3] == "no signal: largest SL ring significance 0.0 < 8"
    assert r["message"][4] == "the fit raised an error: FloatingPointError: injected: the refinement blew up"
    assert np.isfinite(r["lattice_constant"][0]) and np.all(np.isnan(r["lattice_constant"][1:]))
    assert r["frames_done"] == 5
    assert "the fit of frames 4 to 4 raised FloatingPointError" in caplog.text


# --- a full disk mid-run, through the command line --------------------------------------------

def test_full_disk_mid_run_keeps_the_checkpoint_and_the_rerun_finishes(scan, tmp_path, monkeypatch, capsys):
    """ENOSPC while writing the third frame, then while writing the first neighbour pass: each
    time exit code 3 with the file, the cause and the checkpoint named, nothing lost; the third
    run (quiet) finishes with the results of the uninterrupted run."""
    monkeypatch.setattr(driver, "setup_from_reduction", lambda *a, **k: scan["setup"])
    out = tmp_path / "fits.h5"
    argv = ["fit", str(scan["path"]), *CONFIGS, "--out", str(out), *(a for s in SETS for a in ("--set", s)), "-q"]
    real_rows, real_frames = store._write_rows, store._write_frame_rows

    def rows_then_full(g, start, stop, rows):
        if start == 2:
            g["lattice_constant"][start:stop] = -1.0        # part of the batch, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_rows(g, start, stop, rows)

    monkeypatch.setattr(store, "_write_rows", rows_then_full)
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert re.search(r"^xmodel fit: error: Writing frames 2 to 2 to .*fits\.h5 failed: the disk is full \(ENOSPC\)\. "
                     r"The checkpoint stays at frame 2 \(frames 0 to 1 are safely written\); free some space and "
                     r"run the same command again to finish the scan\.$", err.strip()), err
    assert "Traceback" not in err and store.progress(out) == (2, 0)

    def pass_then_full(g, order, values):
        g["orientation_matrix"][int(order[0])] = np.eye(3)  # part of the pass, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "_write_rows", real_rows)
    monkeypatch.setattr(store, "_write_frame_rows", pass_then_full)
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert re.search(r"Writing a neighbour pass \(\d frames?\) to .*fits\.h5 failed: the disk is full \(ENOSPC\)\. "
                     r"Every frame's fit of the main pass is saved, and the pass is put back and run again when "
                     r"the run resumes; free some space and run the same command again", err), err
    assert store.progress(out) == (4, 0)
    monkeypatch.setattr(store, "_write_frame_rows", real_frames)
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and all(" WARNING " in ln or " ERROR " in ln for ln in captured.err.splitlines())
    assert_same_fits(out, scan["reference"])


# --- kills at every stage and resume ---------------------------------------------------------

def _sigkill_after_checkpoint(scan: dict, out: Path, frame: int) -> int:
    """Run `xmodel -v fit` in a subprocess resuming ``out`` and SIGKILL it as soon as it logs the
    checkpoint at ``frame``; returns its exit code."""
    cache = os.environ.get("XMODEL_JAX_CACHE", str(REPO / ".jax_cache"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_ENABLE_X64": "1", "JAX_COMPILATION_CACHE_DIR": cache}
    argv = [sys.executable, "-m", "xmodel.cli", "-v", "fit", str(scan["path"]), *CONFIGS, "--out", str(out),
            *(a for s in SETS for a in ("--set", s))]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO, env=env)
    timer = threading.Timer(300, proc.kill)          # a hang fails the test instead of stalling it
    timer.start()
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if f"checkpoint at frame {frame}" in line:
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait()
    finally:
        timer.cancel()
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-20:])
    return proc.returncode


def test_kills_at_every_stage_resume_to_the_uninterrupted_result(scan, tmp_path, monkeypatch, caplog):
    """One run interrupted six times: after the first batch (stop_after), by a real SIGKILL of
    `xmodel fit` right after its next checkpoint, inside the first neighbour pass after its rows
    were written but before it was recorded, between the two passes, before the neighbour-grain
    test was recorded, and while the maps are written. The final file equals the uninterrupted run
    in every dataset."""
    cfg, settings, setup, path = scan["cfg"], scan["settings"], scan["setup"], scan["path"]
    out = tmp_path / "killed.h5"

    def resume(**kw):
        return fit_scan(path, cfg, out, settings, progress=False, setup=setup, **kw)

    resume(stop_after=1)
    assert store.progress(out) == (1, 0)

    _sigkill_after_checkpoint(scan, out, 2)
    done = store.progress(out)[0]
    assert 2 <= done <= 4

    real_record = store.set_neighbour_passes_done

    def killed_before_record(*a, **k):
        raise Killed("kill after the pass's rows were written")

    monkeypatch.setattr(store, "set_neighbour_passes_done", killed_before_record)
    with pytest.raises(Killed):
        resume()
    with h5py.File(out, "r") as f:
        g = f[store.FITS]
        assert g.attrs["neighbour_passes_done"] == 0 and "complete" in g[store.UNDO]["0"].attrs
        changed_rows = g[store.UNDO]["0"]["frames"][()]
    assert changed_rows.size >= 1                    # the pass did change a frame, now to be put back
    monkeypatch.setattr(store, "set_neighbour_passes_done", real_record)

    real_pass = neighbours.neighbour_pass

    def killed_in_second_pass(*a, near=None, **k):
        if near is not None:
            raise Killed("kill between the passes")
        return real_pass(*a, near=near, **k)

    monkeypatch.setattr(neighbours, "neighbour_pass", killed_in_second_pass)
    caplog.set_level("INFO", logger="fits.scan.results")
    with pytest.raises(Killed):
        resume()
    assert store.progress(out) == (4, 1) and store.changed_frames(out) == changed_rows.tolist()
    assert f"put back the rows of {changed_rows.size} frames of neighbour pass 1" in caplog.text
    monkeypatch.setattr(neighbours, "neighbour_pass", real_pass)

    real_second = store.set_second_grains_done

    def killed_before_second_grains(*a, **k):
        raise Killed("kill before the neighbour-grain test was recorded")

    monkeypatch.setattr(store, "set_second_grains_done", killed_before_second_grains)
    with pytest.raises(Killed):
        resume()
    assert store.progress(out)[1] == settings.neighbours.neighbour_passes and not store.second_grains_done(out)
    monkeypatch.setattr(store, "set_second_grains_done", real_second)

    real_maps = store._write_maps

    def killed_in_maps(g, scan_):
        real_maps(g, scan_)
        raise Killed("kill while the maps are written")

    monkeypatch.setattr(store, "_write_maps", killed_in_maps)
    with pytest.raises(Killed):
        resume()
    monkeypatch.setattr(store, "_write_maps", real_maps)
    resume()
    assert_same_fits(out, scan["reference"])
