"""Tests of xmodel/reduced.py as the scan fit reads it: frames in any order, clear errors."""
import h5py
import numpy as np
import pytest

from xmodel.reduced import is_reduced, open_reduced


def test_frames_come_back_in_the_order_asked(tmp_path):
    path = tmp_path / "r.h5"
    polar = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["polar"], g["q"], g["chi"] = polar, np.arange(3.0), np.array([-90.0, 90.0])
    scan = open_reduced(path)
    assert scan.n_frames == 5 and scan.pixel_counts is None and scan.positions_um is None
    np.testing.assert_array_equal(scan.polar([3, 1, 3]), polar[[3, 1, 3]])
    np.testing.assert_array_equal(scan.polar(slice(1, 3)), polar[1:3])
    assert scan.polar([]).shape == (0, 2, 3) and scan.polar([0]).dtype == np.float64
    assert is_reduced(path) and not is_reduced(tmp_path / "missing.h5")


def test_a_file_that_is_not_a_reduced_scan_is_named(tmp_path):
    bare = tmp_path / "bare.h5"
    with h5py.File(bare, "w") as f:
        f.create_group("entry")
    with pytest.raises(ValueError, match=r"bare\.h5 is not a reduced scan \(no /entry/reduction/polar\): run `xmodel reduce"):
        open_reduced(bare)
    with pytest.raises(FileNotFoundError, match=r"missing\.h5 does not exist"):
        open_reduced(tmp_path / "missing.h5")


def test_positions_and_monitor_added_to_a_reduction_without_them(tmp_path):
    from xmodel.positions import grid_positions
    from xmodel.reduced import store_scan_metadata

    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["polar"], g["q"], g["chi"] = np.zeros((6, 2, 3), np.float32), np.arange(3.0), np.array([-90.0, 90.0])
    pos = grid_positions((2, 3), 0.5, "snake")
    store_scan_metadata(path, pos, np.array([1.0, 2, 2, 2, 2, 4]), "--scan-shape 2x3")
    red = open_reduced(path)
    np.testing.assert_allclose(red.positions_um, pos)
    assert red.grid.shape == (2, 3) and red.flux_factor().tolist() == [2.0, 1, 1, 1, 1, 0.5]
    store_scan_metadata(path, pos)                                   # the same again: nothing to do
    with pytest.raises(ValueError, match=r"r\.h5 already holds other /entry/reduction/positions"):
        store_scan_metadata(path, pos + 1.0)
    with pytest.raises(ValueError, match=r"monitor has 2 rows but the scan has 6 frames"):
        store_scan_metadata(tmp_path / "r.h5", None, np.ones(2))
