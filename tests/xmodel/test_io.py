"""Tests of xmodel.dectris (writing Eiger scans) and xmodel.io (reading them)."""
from __future__ import annotations

import h5py
import hdf5plugin
import numpy as np
import pytest

from xmodel.dectris import EIGER_MASKED_VALUE_UINT32, write_scan
from xmodel.detector import EIGER4M_SHAPE, module_gap_mask
from xmodel.geometry import Geometry
from xmodel.io import ScanError, open_scan
from xmodel.positions import read_positions

SHAPE = (64, 48)


def small_geometry() -> Geometry:
    return Geometry(dist=0.2, poni1=20.5 * 75e-6, poni2=30.5 * 75e-6, rot1=0.0, rot2=0.0, rot3=0.0,
                    wavelength=0.898e-10, pixel1=75e-6, pixel2=75e-6, shape=SHAPE, detector_name="")


def small_frames(n: int, shape=SHAPE, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.poisson(3.0 + i, shape).astype(np.uint32) for i in range(n)]


def raster(n_slow: int, n_fast: int) -> np.ndarray:
    slow, fast = np.meshgrid(np.arange(n_slow) * 0.25, np.arange(n_fast) * 0.25, indexing="ij")
    return np.stack([slow.ravel(), fast.ravel()], axis=1)


@pytest.fixture
def small_scan(tmp_path):
    frames = small_frames(6)
    bad = np.zeros(SHAPE, dtype=bool)
    bad[5, 7] = True
    master = write_scan(tmp_path, "scan", iter(frames), 6, small_geometry(), positions_um=raster(2, 3),
                        pixel_mask=bad, frames_per_file=4)
    return master, frames, bad


def test_round_trip_small(small_scan):
    master, frames, bad = small_scan
    assert sorted(p.name for p in master.parent.iterdir()) == [
        "scan.fio", "scan.poni", "scan_data_000001.h5", "scan_data_000002.h5", "scan_master.h5"]
    with h5py.File(master, "r") as f:
        assert "entry/sample" not in f  # positions live in the scan file, as at a beamline
    np.testing.assert_allclose(read_positions(master.parent / "scan.fio", 6), raster(2, 3))
    with open_scan(master) as scan:
        assert scan.n_frames == 6 and scan.frame_shape == SHAPE
        assert scan.scan_shape is None and scan.positions_um is None
        assert scan.count_time == pytest.approx(0.3) and scan.pixel_mask_applied
        expected = frames[4].copy()
        expected[5, 7] = EIGER_MASKED_VALUE_UINT32  # Eiger fills flagged pixels with 2**32 - 1
        got = scan.frame(4)
        assert got.dtype == np.uint32
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(scan.mask, bad)
        batches = list(scan.iter_batches(4, start=1))
        assert [(i, b.shape[0]) for i, b in batches] == [(1, 4), (5, 1)]  # spans both data files
        np.testing.assert_array_equal(batches[0][1][2], scan.frame(3))
        geo = scan.geometry
        ref = small_geometry()
        for name in ("dist", "poni1", "poni2", "wavelength", "pixel1", "pixel2"):
            assert getattr(geo, name) == pytest.approx(getattr(ref, name), rel=1e-9)
    with open_scan(master, poni=master.parent / "scan.poni") as scan:
        assert scan.geometry.poni1 == ref.poni1


def test_full_eiger_gaps_and_pyfai_reads_poni(tmp_path):
    pyFAI = pytest.importorskip("pyFAI")
    geo = Geometry.from_beam_center(0.41, (2100.0, 60.0), 13.8)
    frames = (np.full(EIGER4M_SHAPE, i, dtype=np.uint32) for i in range(2))
    master = write_scan(tmp_path, "eiger", frames, 2, geo, positions_um=np.zeros((2, 2)), pixel_mask=None,
                        gap_value=7)
    gaps = module_gap_mask("Eiger4M")
    with open_scan(master) as scan:
        np.testing.assert_array_equal(scan.mask, gaps)
        frame = scan.frame(1)
        assert np.all(frame[gaps] == 7) and np.all(frame[~gaps] == 1)
        assert scan.geometry.poni1 == pytest.approx(geo.poni1, rel=1e-9)
        assert scan.geometry.detector_name == "Eiger4M"
        assert scan.scan_shape is None
    ai = pyFAI.load(str(tmp_path / "eiger.poni"))
    assert ai.detector.shape == EIGER4M_SHAPE and ai.poni2 == pytest.approx(geo.poni2)


def test_real_eiger_layout_without_positions(tmp_path):
    """A minimal file laid out as a Dectris detector writes it, made with h5py directly."""
    data = np.arange(3 * 8 * 10, dtype=np.uint32).reshape(3, 8, 10)
    with h5py.File(tmp_path / "x_data_000001.h5", "w") as f:
        f.create_dataset("entry/data/data", data=data, chunks=(1, 8, 10), **hdf5plugin.Bitshuffle(cname="lz4"))
    with h5py.File(tmp_path / "x_master.h5", "w") as f:
        f["entry/data/data_000001"] = h5py.ExternalLink("x_data_000001.h5", "/entry/data/data")
        det = f.create_group("entry/instrument/detector")
        for key, value in (("detector_distance", 0.41), ("x_pixel_size", 75e-6), ("y_pixel_size", 75e-6),
                           ("beam_center_x", 4.0), ("beam_center_y", 2.0), ("count_time", 0.3)):
            det[key] = value
        det["detectorSpecific/x_pixels_in_detector"] = 10
        det["detectorSpecific/y_pixels_in_detector"] = 8
        pixel_mask = np.zeros((8, 10), np.uint32)
        pixel_mask[0, 0] = 16  # noisy
        det["detectorSpecific/pixel_mask"] = pixel_mask
        f["entry/instrument/beam/incident_wavelength"] = 0.898
    with open_scan(tmp_path / "x_master.h5") as scan:
        assert scan.n_frames == 3 and scan.positions_um is None and scan.scan_shape is None
        np.testing.assert_array_equal(scan.frame(2), data[2])
        assert scan.mask.sum() == 1 and scan.mask[0, 0]
        assert scan.geometry.poni2 == pytest.approx(4.0 * 75e-6)  # from the outer corner, as pyFAI
        assert scan.geometry.wavelength == pytest.approx(0.898e-10)


@pytest.mark.parametrize("frames_per_file", [1, 2, 5])
def test_fabio_opens_every_master_we_write(tmp_path, frames_per_file):
    """fabio's Eiger reader sees the same frames, whatever the number of frames per data file."""
    fabio = pytest.importorskip("fabio")
    frames = small_frames(5)
    bad = np.zeros(SHAPE, dtype=bool)
    bad[3, 4] = True
    master = write_scan(tmp_path, "f", iter(frames), 5, small_geometry(), positions_um=None, pixel_mask=bad,
                        frames_per_file=frames_per_file)
    image = fabio.open(str(master))
    assert image.nframes == 5
    with open_scan(master) as scan:
        for i in range(5):
            np.testing.assert_array_equal(image.getframe(i).data, scan.frame(i))
        assert scan.frame(4)[3, 4] == EIGER_MASKED_VALUE_UINT32


def test_beam_centre_convention_matches_pyfai(tmp_path):
    """The master's beam centre is pyFAI's Fit2D centre of the .poni written beside it (tilted too),
    and reading the master gives pyFAI's PONI for an untilted detector."""
    pyFAI = pytest.importorskip("pyFAI")
    geo = Geometry(dist=0.2, poni1=20.3 * 75e-6, poni2=30.7 * 75e-6, rot1=0.02, rot2=-0.01, rot3=0.0,
                   wavelength=0.898e-10, pixel1=75e-6, pixel2=75e-6, shape=SHAPE, detector_name="")
    master = write_scan(tmp_path, "t", iter(small_frames(1)), 1, geo, positions_um=None, pixel_mask=None)
    fit2d = pyFAI.load(str(tmp_path / "t.poni")).getFit2D()
    with h5py.File(master, "r") as f:
        det = f["entry/instrument/detector"]
        assert det["beam_center_x"][()] == pytest.approx(fit2d["centerX"], abs=1e-9)
        assert det["beam_center_y"][()] == pytest.approx(fit2d["centerY"], abs=1e-9)
        assert det["detector_distance"][()] * 1e3 == pytest.approx(fit2d["directDist"], rel=1e-9)
    flat = Geometry(dist=0.2, poni1=20.3 * 75e-6, poni2=30.7 * 75e-6, rot1=0.0, rot2=0.0, rot3=0.0,
                    wavelength=0.898e-10, pixel1=75e-6, pixel2=75e-6, shape=SHAPE, detector_name="")
    master = write_scan(tmp_path / "flat", "u", iter(small_frames(1)), 1, flat, positions_um=None, pixel_mask=None)
    with h5py.File(master, "r") as f:
        det = f["entry/instrument/detector"]
        ai = pyFAI.integrator.azimuthal.AzimuthalIntegrator(pixel1=75e-6, pixel2=75e-6)
        ai.setFit2D(det["detector_distance"][()] * 1e3, det["beam_center_x"][()], det["beam_center_y"][()])
    with open_scan(master) as scan:
        assert scan.geometry.poni1 == pytest.approx(ai.poni1, rel=1e-9)
        assert scan.geometry.poni2 == pytest.approx(ai.poni2, rel=1e-9)
        assert scan.geometry.poni1 == pytest.approx(flat.poni1, rel=1e-9)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int32, np.float32])
def test_invalid_pixels_of_each_dtype(tmp_path, dtype):
    """The dtype's dummy (2**bits - 1), negative and non-finite values are invalid; the count
    cutoff flags saturated pixels."""
    frames = np.ones((2, 4, 5), dtype=dtype)
    if np.dtype(dtype).kind == "u":
        frames[1, 2, 3] = np.iinfo(dtype).max
    elif np.dtype(dtype).kind == "i":
        frames[1, 2, 3] = -1
    else:
        frames[1, 2, 3] = np.nan
        frames[1, 0, 0] = -2.0
    frames[0, 1, 1] = 90  # above the cutoff below
    with h5py.File(tmp_path / "d_data_000001.h5", "w") as f:
        f["entry/data/data"] = frames
    with h5py.File(tmp_path / "d_master.h5", "w") as f:
        f["entry/data/data_000001"] = h5py.ExternalLink("d_data_000001.h5", "/entry/data/data")
        f["entry/instrument/detector/detectorSpecific/countrate_correction_count_cutoff"] = 50
    geo = Geometry(dist=0.2, poni1=0.0, poni2=0.0, rot1=0.0, rot2=0.0, rot3=0.0, wavelength=1e-10,
                   pixel1=75e-6, pixel2=75e-6, shape=(4, 5), detector_name="")
    geo.to_poni(tmp_path / "d.poni")
    with open_scan(tmp_path / "d_master.h5", poni=tmp_path / "d.poni") as scan:
        bad = scan.invalid_pixels(scan.frame(1))
        expected = {(2, 3)} | ({(0, 0)} if np.dtype(dtype).kind == "f" else set())
        assert set(zip(*np.nonzero(bad))) == expected
        assert set(zip(*np.nonzero(scan.invalid_pixels(scan.frame(0))))) == {(1, 1)}  # saturated


def test_identity_tells_two_scans_of_one_shape_apart(tmp_path):
    a = write_scan(tmp_path / "a", "s", iter(small_frames(2)), 2, small_geometry(), positions_um=None,
                   pixel_mask=None)
    b = write_scan(tmp_path / "b", "s", iter(small_frames(2, seed=1)), 2, small_geometry(), positions_um=None,
                   pixel_mask=None)
    with open_scan(a) as sa, open_scan(b) as sb:
        assert sa.identity() != sb.identity() and sa.identity() == sa.identity()


def test_user_mask_file(small_scan, tmp_path):
    master, _, bad = small_scan
    user = np.zeros(SHAPE, dtype=bool)
    user[0, :] = True
    np.save(tmp_path / "user.npy", user)
    with open_scan(master, mask=tmp_path / "user.npy") as scan:
        np.testing.assert_array_equal(scan.mask, bad | user)


def test_missing_data_file(small_scan):
    master, _, _ = small_scan
    (master.parent / "scan_data_000002.h5").unlink()
    with pytest.raises(ScanError, match=r"scan_data_000002\.h5 .*frames from 4 on\) is missing"):
        open_scan(master)


def test_corrupt_chunk_names_file_and_frame(small_scan):
    master, _, _ = small_scan
    path = master.parent / "scan_data_000002.h5"
    with h5py.File(path, "r") as f:
        offset = f["entry/data/data"].id.get_chunk_info(1).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * 64)
    with open_scan(master) as scan:
        np.testing.assert_array_equal(scan.frame(4).shape, SHAPE)  # the intact frame still reads
        with pytest.raises(ScanError, match=r"Cannot read frame 5 \(frame 1 of .*scan_data_000002\.h5"):
            scan.frame(5)
        with pytest.raises(ScanError, match=r"Cannot read frame 5 "):
            list(scan.iter_batches(4))


def test_wrong_frame_shape(small_scan):
    master, _, _ = small_scan
    with h5py.File(master.parent / "scan_data_000002.h5", "w") as f:
        f.create_dataset("entry/data/data", data=np.zeros((2, 10, 10), np.uint32))
    with pytest.raises(ScanError, match=r"holds frames of shape \(10, 10\), expected \(64, 48\)"):
        open_scan(master)


def test_unavailable_filter(tmp_path):
    """A chunk whose filter HDF5 does not know (as without hdf5plugin) gives a clear hint."""
    with h5py.File(tmp_path / "y_data_000001.h5", "w") as f:
        ds = f.create_dataset("entry/data/data", shape=(1, 4, 4), dtype=np.uint32, chunks=(1, 4, 4),
                              compression=31999, allow_unknown_filter=True)
        ds.id.write_direct_chunk((0, 0, 0), b"\x00" * 64)
    with h5py.File(tmp_path / "y_master.h5", "w") as f:
        f["entry/data/data_000001"] = h5py.ExternalLink("y_data_000001.h5", "/entry/data/data")
    with pytest.raises(ScanError, match="needed for the geometry: give the geometry with --poni FILE.poni"):
        open_scan(tmp_path / "y_master.h5")
    geo = Geometry(dist=0.2, poni1=0.0, poni2=0.0, rot1=0.0, rot2=0.0, rot3=0.0, wavelength=1e-10,
                   pixel1=75e-6, pixel2=75e-6, shape=(4, 4), detector_name="")
    geo.to_poni(tmp_path / "y.poni")
    with open_scan(tmp_path / "y_master.h5", poni=tmp_path / "y.poni") as scan:
        with pytest.raises(ScanError, match=r"Cannot read frame 0 .*filter \[31999\].*install hdf5plugin"):
            scan.frame(0)


def test_bad_arguments(small_scan, tmp_path):
    master, _, _ = small_scan
    with pytest.raises(ScanError, match="does not exist"):
        open_scan(tmp_path / "nope_master.h5")
    with open_scan(master) as scan:
        with pytest.raises(ScanError, match=r"Frame 6 does not exist: .* holds frames 0 to 5"):
            scan.frame(6)
    with pytest.raises(ValueError, match=r"positions_um has shape \(3, 2\)"):
        write_scan(tmp_path / "b", "b", iter(small_frames(2)), 2, small_geometry(), positions_um=np.zeros((3, 2)),
                   pixel_mask=None)
    with pytest.raises(ValueError, match="frames yielded only 1 images but n_frames=2"):
        write_scan(tmp_path / "c", "c", iter(small_frames(1)), 2, small_geometry(), positions_um=np.zeros((2, 2)),
                   pixel_mask=None)


def test_read_group_decodes_strings_and_names_what_is_missing(tmp_path):
    from xmodel.io import read_group

    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/fits")
        g["status"] = np.arange(3)
        g.create_dataset("message", data=["ok", "no signal", ""], dtype=h5py.string_dtype())
        g.attrs["frames_done"] = 3
    out, attrs = read_group(path, "/entry/fits", "run xmodel fit first")
    assert out["message"].tolist() == ["ok", "no signal", ""] and out["status"].tolist() == [0, 1, 2]
    assert attrs["frames_done"] == 3
    with pytest.raises(ValueError, match=r"r.h5 has no /truth; write it first"):
        read_group(path, "/truth", "write it first")
    with pytest.raises(FileNotFoundError, match=r"nope.h5 does not exist; write it first"):
        read_group(tmp_path / "nope.h5", "/truth", "write it first")


def test_eiger2_master_via_pyfai_registry(tmp_path):
    """An Eiger2 4M master: recognised from its frame shape, module gaps from pyFAI's mask."""
    pyFAI = pytest.importorskip("pyFAI")
    reference = pyFAI.detector_factory("Eiger2_4M")
    shape = tuple(reference.max_shape)
    geo = Geometry(dist=0.41, poni1=0.08, poni2=0.07, rot1=0.0, rot2=0.0, rot3=0.0, wavelength=0.898e-10,
                   pixel1=75e-6, pixel2=75e-6, shape=shape, detector_name="Eiger2_4M")
    master = write_scan(tmp_path, "e2", iter([np.ones(shape, np.uint32)]), 1, geo, positions_um=None,
                        pixel_mask=None)
    with open_scan(master) as scan:
        assert scan.geometry.detector_name == "Eiger2_4M"
        np.testing.assert_array_equal(scan.mask, np.asarray(reference.mask, dtype=bool))
        assert np.all(scan.frame(0)[scan.mask] == EIGER_MASKED_VALUE_UINT32)


def test_pixel_mask_not_applied(tmp_path):
    """With pixel_mask_applied = 0 the flagged pixels keep their counts; the reader masks them."""
    frames = small_frames(1)
    bad = np.zeros(SHAPE, dtype=bool)
    bad[5, 7] = True
    master = write_scan(tmp_path, "n", iter(frames), 1, small_geometry(), positions_um=None, pixel_mask=bad,
                        pixel_mask_applied=False)
    with open_scan(master) as scan:
        assert scan.pixel_mask_applied is False
        np.testing.assert_array_equal(scan.frame(0), frames[0])
        assert scan.mask[5, 7] and scan.mask.sum() == 1
