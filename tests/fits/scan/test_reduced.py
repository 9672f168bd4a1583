"""Tests of fits/scan/reduced.py: the one reader of /entry/reduction in the scan fit."""
import h5py
import numpy as np
import pytest

from fits.scan.reduced import is_reduced, open_reduced


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
    with pytest.raises(ValueError, match=r"bare\.h5 has no /entry/reduction/polar; reduce the scan first"):
        open_reduced(bare)
    with pytest.raises(FileNotFoundError, match=r"missing\.h5 does not exist"):
        open_reduced(tmp_path / "missing.h5")
