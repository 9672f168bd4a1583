"""Tests of `xmodel synth` (xmodel/synth.py): a tiny twin (2 domains, 4 x 4 points, detector
binned 4x) rendered to Dectris files and read back with xmodel.io.open_scan."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from xmodel.config import CONFIG_DIR
from xmodel.experiment import Experiment
from xmodel.io import open_scan
from xmodel.positions import acquisition_order, derive_grid, read_monitor, read_positions
from xmodel.synth import synthesize
from xmodel.twin import TwinError, background_counts, load_twin

SMALL = f"""
name = "small"
seed = 7
experiment = "{CONFIG_DIR}/experiment/p10_eiger4m.toml"
[detector]
binning = 4
[scan]
shape = [4, 4]
step_um = 2.0
[boundary]
roughness = 0.0
[[domain]]
file = "{CONFIG_DIR}/domains/red.toml"
center_um = [2.0, 1.0]
radius_um = 3.0
width_um = 2.0
shrink = 0.1
tilt_deg = 10.0
[[domain]]
file = "{CONFIG_DIR}/domains/orange.toml"
center_um = [2.0, 6.5]
radius_um = 3.0
edge_tilt_deg = [7.0, 22.0]
width_um = 2.0
shrink = 0.08
[[overlap]]
domain = "orange"
center_um = [2.0, 2.0]
radius_um = 0.8
fraction = 0.5
"""


def _frames(master):
    with open_scan(master) as scan:
        return scan, np.stack([scan.frame(i) for i in range(scan.n_frames)])


def _truth(path):
    with h5py.File(path) as f:
        return {k: f["truth"][k][()] for k in f["truth"]}, dict(f.attrs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    toml = root / "small.toml"
    toml.write_text(SMALL)
    a = synthesize([toml], root / "a", progress=False, batch_size=4)
    b = synthesize([toml], root / "b", progress=False, batch_size=4)
    c = synthesize([toml], root / "c", overrides=["seed=8"], progress=False, batch_size=4)
    return toml, a, b, c


def test_files_and_readback(runs):
    toml, master, _, _ = runs
    out = master.parent
    assert master.name == "small_master.h5"
    assert sorted(p.name for p in out.iterdir()) == ["small.fio", "small.poni", "small_data_000001.h5",
                                                     "small_master.h5", "truth.h5"]
    scan, frames = _frames(master)
    assert scan.n_frames == 16 and scan.scan_shape is None and scan.positions_um is None  # as a real master
    assert frames.dtype == np.uint32
    np.testing.assert_allclose(read_positions(out / "small.fio", 16)[5], [2.0, 2.0])
    truth, attrs = _truth(out / "truth.h5")
    assert list(attrs["label_names"]) == ["red", "orange"]
    with h5py.File(out / "truth.h5") as f:
        assert f["truth/lattice_constant"].attrs["units"] == "angstrom"
        assert f["truth/tilt_deg"].attrs["units"] == "degree"
    valid = ~scan.mask
    sums = frames[:, valid].astype(np.float64).sum(axis=1)
    expected = truth["expected_counts"]
    # Poisson: the frame total is within 5 sigma of the expected total
    assert np.all(np.abs(sums - expected) < 5 * np.sqrt(expected) + 1)
    # empty points hold only background: expected = background x solid angle x polarization
    sample = load_twin(toml)
    pixels = Experiment.from_config(sample.domains[0].config).pixels()
    bg_total = background_counts(sample) * pixels.weight[pixels.valid].sum()
    empty = truth["empty"]
    assert empty.any() and (~empty).any()
    np.testing.assert_allclose(expected[empty], bg_total, rtol=1e-5)
    assert frames[empty][:, valid].max() <= 5
    # material scatters: SL peaks of hundreds of counts, frames far above background
    assert np.all(expected[~empty] > 1.1 * bg_total)
    assert frames[~empty][:, valid].max() > 100
    # the overlap patch gives a mixed point with both components
    assert truth["mixed"].any()
    assert set(truth["configuration"][~empty]) == {b"conf1", b"conf2"}
    # SL detectability: none at empty points, SL peaks standing out at the red domain's
    # untilted interior (one point is enough), visible == snr above the documented threshold
    from xmodel.synth import SL_VISIBLE_SNR
    snr = truth["sl_snr"]
    assert np.all(np.isfinite(snr)) and np.all(snr >= 0)
    np.testing.assert_array_equal(snr[empty], 0.0)
    assert snr[~empty].max() > SL_VISIBLE_SNR ** 2
    np.testing.assert_array_equal(truth["sl_visible"], snr >= SL_VISIBLE_SNR ** 2)


def test_deterministic_for_a_seed(runs):
    _, a, b, c = runs
    fa, fb, fc = (_frames(m)[1] for m in (a, b, c))
    np.testing.assert_array_equal(fa, fb)
    ta, tb, tc = (_truth(m.parent / "truth.h5")[0] for m in (a, b, c))
    for key in ta:
        np.testing.assert_array_equal(ta[key], tb[key])
    # another seed: another noise realisation (the layout here has no seeded draws)
    assert not np.array_equal(fa, fc)
    np.testing.assert_array_equal(ta["label"], tc["label"])


def test_no_partial_left_and_errors(runs, tmp_path):
    toml, master, _, _ = runs
    assert not any(p.name.startswith(".") for p in master.parent.iterdir())
    with pytest.raises(TwinError, match="synthesize takes one twin TOML, got 2 paths"):
        synthesize([toml, toml], tmp_path)
    with pytest.raises(ValueError, match="batch_size=0 must be a positive integer"):
        synthesize([toml], tmp_path, batch_size=0)


def test_a_scan_as_it_reaches_a_p10_user(runs, tmp_path):
    """Snake order, +-20 % flux with a monitor column, dummy pixels outside the pixel mask and
    jittered encoder positions in the .fio; the truth follows the frames; the reduction with the
    .fio's positions and monitor masks the dummy pixels and maps the frames back in place."""
    from xmodel.reduced import open_reduced
    from xmodel.reduction import reduce_scan

    toml, raster_master, _, _ = runs
    master = synthesize([toml], tmp_path / "p10", progress=False, batch_size=4, scan_order="snake",
                        monitor_variation=0.2, dummy_fraction=0.25, position_jitter_um=0.05)
    truth, attrs = _truth(master.parent / "truth.h5")
    raster, _ = _truth(raster_master.parent / "truth.h5")
    order = acquisition_order((4, 4), "snake")
    assert attrs["scan_order"] == "snake"
    np.testing.assert_array_equal(truth["label"], raster["label"][order])
    np.testing.assert_allclose(truth["expected_counts"] / truth["relative_flux"], raster["expected_counts"][order],
                               rtol=1e-5)
    assert np.all(np.abs(truth["relative_flux"] - 1) <= 0.2) and truth["relative_flux"].std() > 0.05
    fio = master.parent / "small.fio"
    monitor = read_monitor(f"{fio}:monitor", 16)
    np.testing.assert_allclose(monitor / monitor.mean(), truth["relative_flux"] / truth["relative_flux"].mean())
    positions = read_positions(fio, 16)
    assert 0 < np.abs(positions - truth["positions_um"]).max() < 0.3
    assert derive_grid(positions).shape == (4, 4)
    assert (truth["dummy_pixels"] > 0).sum() == 4

    out = reduce_scan(master, tmp_path / "r.h5", q_bins=40, chi_bins=16, progress=False,
                      positions_um=positions, monitor=monitor)
    red = open_reduced(out)
    assert red.invalid_pixels.tolist() == truth["dummy_pixels"].tolist()
    assert np.nanmax(red.polar()) < 1e6  # no dummy value in any mean
    np.testing.assert_array_equal(red.map_image(truth["label"]), raster["label"].reshape(4, 4))


def test_frame_and_sl_peaks_equal_the_model_and_its_sl_part(runs):
    """One evaluation of the terms gives the model's frame and its SL peaks alone (sl_snr)."""
    from xmodel.synth import domain_models, frame_and_sl_peaks
    from xmodel.twin import components, domain_params

    sample = load_twin(runs[0])
    pixels = Experiment.from_config(sample.domains[0].config).pixels()
    comps = components(sample)
    model = domain_models(sample, pixels, comps)[0]
    p = domain_params(sample, 0)
    frame, peaks = frame_and_sl_peaks(model)(model.arrays, p)
    zero = np.zeros_like(np.asarray(p.al_scale))
    alone = model(p.replace(diffuse_scale=zero, al_scale=zero, background=zero))
    np.testing.assert_allclose(np.asarray(frame), np.asarray(model(p)), rtol=1e-5, atol=1e-6 * float(np.max(frame)))
    np.testing.assert_allclose(np.asarray(peaks), np.asarray(alone), rtol=1e-5, atol=1e-6 * float(np.max(peaks)))
    assert float(np.max(peaks)) > 0


def test_a_killed_synthesis_resumes_and_equals_an_uninterrupted_one(runs, tmp_path, monkeypatch):
    """Killed after 9 of 16 frames (data files of 4 frames): the same call renders only the
    frames of the unfinished files and gives the uninterrupted scan; other settings are refused
    until --restart."""
    import xmodel.synth as synth

    toml, master_a, _, _ = runs
    monkeypatch.setattr(synth, "FRAMES_PER_FILE", 4)
    rendered = []
    real = synth.expected_frames

    def counting(*args, **kwargs):
        for frame in real(*args, **kwargs):
            rendered.append(1)
            if len(rendered) == 10:
                raise KeyboardInterrupt("killed")
            yield frame

    monkeypatch.setattr(synth, "expected_frames", counting)
    out = tmp_path / "scan"
    with pytest.raises(KeyboardInterrupt):
        synthesize([toml], out, progress=False, batch_size=4)
    partial = out / ".small.partial"
    assert sorted(p.name for p in partial.glob("*.facts.npz")) == [
        "small_data_000001.facts.npz", "small_data_000002.facts.npz"]
    assert not (out / "small_master.h5").exists()
    with pytest.raises(TwinError, match=r"other settings \(differing: overrides, seed\).*--restart"):
        synthesize([toml], out, overrides=["seed=8"], progress=False, batch_size=4)

    real_code = synth.code_fingerprint
    monkeypatch.setattr(synth, "code_fingerprint", lambda: "another version")
    with pytest.raises(TwinError, match=r"differing: xmodel_sha256"):
        synthesize([toml], out, progress=False, batch_size=4)
    monkeypatch.setattr(synth, "code_fingerprint", real_code)

    rendered.clear()
    monkeypatch.setattr(synth, "expected_frames", real)
    calls = []

    def tracking(*args, **kwargs):
        calls.append(np.asarray(args[6] if len(args) > 6 else kwargs["points"]).tolist())
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "expected_frames", tracking)
    master = synthesize([toml], out, progress=False, batch_size=4)
    assert calls == [list(range(8, 16))]                       # only the two unfinished files
    assert not partial.exists() and sorted(p.name for p in out.glob("small_data_*.h5")) == [
        f"small_data_{k:06d}.h5" for k in range(1, 5)]
    np.testing.assert_array_equal(_frames(master)[1], _frames(master_a)[1])
    resumed, _ = _truth(out / "truth.h5")
    whole, _ = _truth(master_a.parent / "truth.h5")
    for key in whole:
        np.testing.assert_array_equal(resumed[key], whole[key], err_msg=key)

    # restart discards an unfinished run with other settings
    (out / ".small.partial").mkdir()
    (out / ".small.partial" / synth.SETTINGS_RECORD).write_text('{"seed": 1}')
    with pytest.raises(TwinError, match="other settings"):
        synthesize([toml], out, progress=False, batch_size=4)
    synthesize([toml], out, progress=False, batch_size=4, restart=True)
    assert not (out / ".small.partial").exists()
