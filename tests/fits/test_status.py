"""Tests of fits.status: stable codes, the ``status_codes`` attribute, files of the older vocabularies."""
import h5py
import numpy as np
import pytest

from fits.status import LATTICE_OUTCOMES, PROFILE_OUTCOMES, FitStatus, read_status, status_codes_attribute


def test_codes_are_stable():
    """The scan fit's codes 0-6 are the ones files have always held; the profile outcomes follow."""
    want = ["OK", "NO_SIGNAL", "NOT_CONVERGED", "BAD_DATA", "AT_BOUND", "FAILED", "MIXED",
            "NO_PEAK", "PEAK_FIT_FAILED", "NO_DATA", "AMBIGUOUS", "FROM_MODEL_FIT"]
    assert [FitStatus.from_code(i).name for i in range(len(want))] == want
    assert all(FitStatus.from_code(s.code) is s for s in FitStatus)
    assert len({s.value for s in FitStatus}) == len(FitStatus)        # one message per outcome
    assert set(PROFILE_OUTCOMES) < set(LATTICE_OUTCOMES)
    with pytest.raises(ValueError, match=r"unknown fit status code 12; valid codes are 0 \(OK\)"):
        FitStatus.from_code(12)


def test_status_codes_attribute_round_trip(tmp_path):
    path = tmp_path / "s.h5"
    codes = np.array([s.code for s in FitStatus], np.int8)
    with h5py.File(path, "w") as f:
        f["entry/x/status"] = codes
        f["entry/x/status"].attrs["status_codes"] = status_codes_attribute()
        f["entry/fits/status"] = np.array([0, 6, 1], np.int32)          # scan fit, no attribute
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(read_status(f["entry/x/status"]), codes)
        np.testing.assert_array_equal(read_status(f["entry/fits/status"]), [0, 6, 1])


def test_a_file_with_another_numbering_is_translated_by_name(tmp_path):
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("status", data=np.array([3, 0, 3], np.int8))
        ds.attrs["status_codes"] = ["0 OK: ok", "3 AMBIGUOUS: whatever the message said then"]
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(read_status(f["status"]), [FitStatus.AMBIGUOUS.code, 0,
                                                                 FitStatus.AMBIGUOUS.code])


def test_older_qmap_files_are_read(tmp_path):
    """``/entry/qmap/<family>`` once held its own numbering in the group attribute status_names."""
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/qmap/200")
        g.attrs["status_names"] = ["0: ok", "1: no peak", "2: fit failed", "3: no data", "4: ambiguous",
                                   "5: from the model fit"]
        g["status"] = np.array([0, 1, 4, 5], np.int8)
        g["peak_status"] = np.array([0, 1, 2, 3], np.int8)
    with h5py.File(path, "r") as f:
        got = read_status(f["entry/qmap/200/status"])
        peak = read_status(f["entry/qmap/200/peak_status"])
    assert [FitStatus.from_code(c) for c in got] == [FitStatus.OK, FitStatus.NO_PEAK, FitStatus.AMBIGUOUS,
                                                     FitStatus.FROM_MODEL_FIT]
    assert [FitStatus.from_code(c) for c in peak] == list(PROFILE_OUTCOMES)


def test_unknown_entries_and_codes_are_refused(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f["a"] = np.array([0, 1], np.int8)
        f["a"].attrs["status_codes"] = ["0 OK: ok", "1 SPLIT: two grains"]
        f["b"] = np.array([0, 2], np.int8)
        f["b"].attrs["status_codes"] = ["0 OK: ok", "1 NO_PEAK: no peak"]
        f["c"] = np.array([0, 12], np.int32)
    with h5py.File(path, "r") as f:
        with pytest.raises(ValueError, match=r"bad.h5:/a: status entry '1 SPLIT: two grains' names no known"):
            read_status(f["a"])
        with pytest.raises(ValueError, match=r"bad.h5:/b holds status codes \[2\] that its vocabulary does not"):
            read_status(f["b"])
        with pytest.raises(ValueError, match=r"bad.h5:/c holds status codes \[12\]"):
            read_status(f["c"])
