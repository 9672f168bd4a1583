"""Detector masks: module gaps vs pyFAI, beamstop geometry, mask files, binning."""
from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest

from xmodel.detector import (
    DECTRIS_PIXEL_MASK_KEY,
    DETECTOR_SPECS,
    EIGER4M_SHAPE,
    EIGER_PIXEL,
    beamstop_mask,
    bin_image,
    bin_mask,
    combine_masks,
    detector_spec,
    load_mask,
    module_gap_mask,
)


def test_eiger4m_module_gaps_equal_pyfai_mask():
    detectors = pytest.importorskip("pyFAI.detectors")
    mask = module_gap_mask("Eiger4M")
    assert mask.dtype == bool and mask.shape == EIGER4M_SHAPE
    np.testing.assert_array_equal(mask, detectors.detector_factory("Eiger4M").mask.astype(bool))
    # Three 37-row gaps between the four module rows, one 10-column gap between the two module columns.
    assert mask[514:551].all() and not mask[513, :1030].any() and not mask[551, :1030].any()
    assert mask[:, 1030:1040].all() and not mask[:514, 1040].any()


@pytest.mark.parametrize("name", ["Eiger500k", "Eiger1M", "Eiger9M"])
def test_other_eiger_specs_equal_pyfai(name):
    detectors = pytest.importorskip("pyFAI.detectors")
    reference = detectors.detector_factory(name)
    shape, pixel = detector_spec(name)
    assert shape == tuple(reference.max_shape)
    assert pixel == (reference.pixel1, reference.pixel2)
    np.testing.assert_array_equal(module_gap_mask(name), np.asarray(reference.mask, dtype=bool))


def test_detector_spec_names_and_errors():
    assert detector_spec("Eiger 4M") == (EIGER4M_SHAPE, (EIGER_PIXEL, EIGER_PIXEL))
    assert detector_spec("eiger4m") == detector_spec("Eiger4M")
    assert "Eiger4M" in DETECTOR_SPECS
    with pytest.raises(ValueError, match=r"Unknown detector 'Foo 1M': neither built in \(Eiger500k, Eiger1M, "
                                         r"Eiger4M, Eiger9M, Eiger16M\) nor in pyFAI's registry"):
        detector_spec("Foo 1M")


@pytest.mark.parametrize("name", ["Eiger2_4M", "Eiger2 9M", "Eiger2_16M", "Pilatus 1M"])
def test_detectors_from_pyfai_registry(name):
    pyFAI = pytest.importorskip("pyFAI")
    reference = pyFAI.detector_factory(name.replace(" ", "_"))
    shape, pixel = detector_spec(name)
    assert shape == tuple(reference.max_shape)
    assert pixel == (reference.pixel1, reference.pixel2)
    np.testing.assert_array_equal(module_gap_mask(name), np.asarray(reference.mask, dtype=bool))


def test_eiger2_geometry_from_poni(tmp_path):
    pytest.importorskip("pyFAI")
    from xmodel.detector import find_detector
    from xmodel.geometry import Geometry

    poni = tmp_path / "eiger2.poni"
    poni.write_text("poni_version: 2.1\nDetector: Eiger2_4M\nDetector_config: {}\nDistance: 0.41\n"
                    "Poni1: 0.08\nPoni2: 0.07\nRot1: 0\nRot2: 0\nRot3: 0\nWavelength: 8.98e-11\n")
    geo = Geometry.from_poni(poni)
    assert tuple(geo.shape) == (2162, 2068)
    assert find_detector((2162, 2068), (75e-6, 75e-6)) == "Eiger2_4M"
    assert find_detector((2167, 2070), (75e-6, 75e-6)) == "Eiger4M"
    assert find_detector((10, 10), (75e-6, 75e-6)) == ""


def test_registry_needs_the_beamline_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyFAI.detectors", None)  # as if pyFAI were not installed
    from xmodel import detector

    detector._pyfai_spec.cache_clear()
    with pytest.raises(ValueError, match=r"pip install 'xmodel\[beamline\]'"):
        detector_spec("Eiger2_4M")
    assert detector_spec("Eiger4M")[0] == EIGER4M_SHAPE  # built in: no pyFAI needed
    detector._pyfai_spec.cache_clear()


def test_beamstop_disc_and_holder_direction():
    shape = (200, 300)
    center = (100.0, 50.0)
    disc = beamstop_mask(shape, center, radius_px=10)
    assert disc[100, 50] and disc[100, 60] and not disc[100, 61] and not disc[199, 299]
    assert disc.sum() == pytest.approx(np.pi * 10**2, rel=0.05)

    along_cols = beamstop_mask(shape, center, radius_px=10, holder_width_px=6, holder_angle_deg=0.0)
    assert along_cols[100, 299] and along_cols[103, 250] and not along_cols[104, 250]
    assert not along_cols[100, 20]  # the holder runs from the centre towards +col only

    along_rows = beamstop_mask(shape, center, radius_px=10, holder_width_px=6, holder_angle_deg=90.0)
    assert along_rows[199, 50] and not along_rows[0, 50] and not along_rows[100, 299]

    diagonal = beamstop_mask(shape, (0.0, 0.0), radius_px=0, holder_width_px=2, holder_angle_deg=45.0)
    assert diagonal[150, 150] and not diagonal[150, 160]


def test_beamstop_centre_outside_detector_and_bad_radius():
    mask = beamstop_mask((50, 50), (-5.0, -5.0), radius_px=10)
    assert mask[0, 0] and not mask[10, 10]
    with pytest.raises(ValueError, match=r"beamstop radius_px=-1 must be a finite number >= 0"):
        beamstop_mask((50, 50), (0, 0), radius_px=-1)


def test_load_mask_npy_and_h5(tmp_path):
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[2, 3] = 1
    np.save(tmp_path / "mask.npy", mask)
    np.testing.assert_array_equal(load_mask(tmp_path / "mask.npy", shape=(6, 8)), mask.astype(bool))

    with h5py.File(tmp_path / "one.h5", "w") as f:
        f["data/mask"] = mask * 7
        f["data/scalar"] = 3.0
    loaded = load_mask(tmp_path / "one.h5")
    assert loaded.dtype == bool and loaded[2, 3] and loaded.sum() == 1

    pixel_mask = np.zeros((6, 8), dtype=np.uint32)
    pixel_mask[0, 0] = 1 << 3  # a Dectris bit flag: nonzero = masked
    with h5py.File(tmp_path / "master.nxs", "w") as f:
        f[DECTRIS_PIXEL_MASK_KEY] = pixel_mask
        f["entry/other"] = mask
    loaded = load_mask(tmp_path / "master.nxs")
    assert loaded[0, 0] and loaded.sum() == 1
    assert load_mask(tmp_path / "master.nxs", key="entry/other")[2, 3]


def test_load_mask_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Mask file '.*missing\.npy' does not exist"):
        load_mask(tmp_path / "missing.npy")

    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"] = np.zeros((4, 4))
        f["b/c"] = np.ones((4, 4))
    with pytest.raises(KeyError, match=r"has no dataset 'nope'\. Available 2D datasets: /a, /b/c\. "
                                       r"Pass one of them as key="):
        load_mask(tmp_path / "two.h5", key="nope")
    with pytest.raises(ValueError, match=r"holds 2 2D datasets \(/a, /b/c\); pass key= to choose one"):
        load_mask(tmp_path / "two.h5")

    np.save(tmp_path / "small.npy", np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"Mask in '.*small\.npy' has shape \(4, 5\) but the detector has "
                                         r"shape \(2167, 2070\)"):
        load_mask(tmp_path / "small.npy", shape=EIGER4M_SHAPE)

    np.save(tmp_path / "cube.npy", np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match=r"has 3 dimensions \(shape \(2, 4, 5\)\); a mask must be 2D"):
        load_mask(tmp_path / "cube.npy")

    (tmp_path / "mask.txt").write_text("0 1")
    with pytest.raises(ValueError, match=r"unknown extension '\.txt'; valid are \.npy, \.h5"):
        load_mask(tmp_path / "mask.txt")


def test_load_mask_edf_via_fabio(tmp_path, monkeypatch):
    fabio = pytest.importorskip("fabio")
    mask = np.zeros((6, 8), dtype=np.int8)
    mask[5, 7] = 1
    fabio.edfimage.EdfImage(data=mask).write(str(tmp_path / "mask.edf"))
    np.testing.assert_array_equal(load_mask(tmp_path / "mask.edf"), mask.astype(bool))
    monkeypatch.setitem(sys.modules, "fabio", None)  # as if fabio were not installed
    with pytest.raises(ImportError, match=r"needs the optional package fabio \(pip install fabio\)"):
        load_mask(tmp_path / "mask.edf")


def test_bin_mask_any_pixel_masks_the_block():
    mask = np.zeros((5, 7), dtype=bool)
    mask[1, 1] = True
    mask[4, 6] = True  # cropped away by binning 2
    binned = bin_mask(mask, 2)
    assert binned.shape == (2, 3)
    np.testing.assert_array_equal(binned, [[True, False, False], [False, False, False]])
    with pytest.raises(ValueError, match=r"Binning factor 0 must be a positive integer"):
        bin_mask(mask, 0)
    with pytest.raises(ValueError, match=r"Binning factor 8 is larger than the array shape \(5, 7\)"):
        bin_mask(mask, 8)


def test_bin_image_sum_and_mean_match_loops():
    rng = np.random.default_rng(1)
    image = rng.poisson(3.0, size=(2, 9, 10)).astype(np.float32)  # two frames
    summed = bin_image(image, 3)
    expected = np.array([[[image[f, 3 * i:3 * i + 3, 3 * j:3 * j + 3].sum() for j in range(3)] for i in range(3)]
                         for f in range(2)])
    assert summed.dtype == np.float32 and summed.shape == (2, 3, 3)
    np.testing.assert_allclose(summed, expected, rtol=1e-6)
    np.testing.assert_allclose(bin_image(image, 3, reduce="mean"), expected / 9, rtol=1e-6)
    with pytest.raises(ValueError, match=r"bin_image reduce='max' is not valid; use 'sum' or 'mean'"):
        bin_image(image, 3, reduce="max")


def test_binned_module_gap_mask_matches_binned_geometry_shape():
    binned = bin_mask(module_gap_mask("Eiger4M"), 2)
    assert binned.shape == (1083, 1035)
    assert binned[257:276].all()


def test_combine_masks():
    a = np.array([[True, False], [False, False]])
    b = np.array([[0, 0], [0, 5]])
    np.testing.assert_array_equal(combine_masks(a, b), [[True, False], [False, True]])
    with pytest.raises(ValueError, match=r"combine_masks got masks of different shapes"):
        combine_masks(a, np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"combine_masks needs at least one mask"):
        combine_masks()
