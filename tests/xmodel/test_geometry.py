"""Geometry vs pyFAI: q, chi, solid angle, polarization, .poni round trips, inverse maps."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from xmodel.detector import EIGER4M_SHAPE, EIGER_PIXEL
from xmodel.geometry import Geometry

pyFAI = pytest.importorskip("pyFAI")
from pyFAI.detectors import detector_factory  # noqa: E402
from pyFAI.integrator.azimuthal import AzimuthalIntegrator  # noqa: E402

WAVELENGTH = 0.898e-10  # m, 13.8 keV
# (dist, poni1, poni2, rot1, rot2, rot3): the paper's corner geometry and tilted variants.
TILTED = [
    (0.41, 0.150, 0.145, 0.05, -0.03, 0.2),
    (0.41, 0.010, 0.020, -0.03, 0.2, 0.05),
    (0.25, 0.080, 0.075, 0.2, 0.05, -0.03),
]


def _pair(params, binning: int = 1, small: bool = False):
    """pyFAI integrator and our Geometry for the same PONI; Eiger 4M, or a small generic detector."""
    dist, poni1, poni2, rot1, rot2, rot3 = params
    if small:
        det = pyFAI.detectors.Detector(pixel1=EIGER_PIXEL * 8, pixel2=EIGER_PIXEL * 8, max_shape=(270, 258))
    else:
        det = detector_factory("Eiger4M")
    geometry = Geometry(dist, poni1, poni2, rot1, rot2, rot3, WAVELENGTH, det.pixel1, det.pixel2,
                        tuple(det.max_shape), "" if small else "Eiger4M")
    if binning > 1:
        det.binning = (binning, binning)
    ai = AzimuthalIntegrator(dist=dist, poni1=poni1, poni2=poni2, rot1=rot1, rot2=rot2, rot3=rot3,
                             wavelength=WAVELENGTH, detector=det)
    return ai, geometry


def _angle_difference_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a - b + 180.0) % 360.0 - 180.0


@pytest.mark.parametrize("params", TILTED)
def test_full_eiger4m_arrays_match_pyfai(params):
    ai, geometry = _pair(params)
    shape = geometry.shape
    q = geometry.q()
    assert q.shape == shape and q.dtype == np.float64
    np.testing.assert_allclose(q, ai.center_array(shape, unit="q_A^-1"), rtol=1e-6)
    chi = geometry.chi()
    assert np.abs(_angle_difference_deg(chi, ai.center_array(shape, unit="chi_deg"))).max() < 1e-4
    np.testing.assert_allclose(geometry.solid_angle(), ai.solidAngleArray(shape), rtol=1e-6)


@pytest.mark.parametrize("params", TILTED)
def test_small_detector_two_theta_and_q_lab_match_pyfai(params):
    ai, geometry = _pair(params, small=True)
    np.testing.assert_allclose(geometry.two_theta(), ai.center_array(geometry.shape, unit="2th_rad"),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(geometry.q_lab(), axis=-1),
                               ai.center_array(geometry.shape, unit="q_A^-1"), rtol=1e-9)


def test_positions_match_pyfai_calc_pos_zyx():
    ai, geometry = _pair(TILTED[1])
    rows = np.array([0.0, 17.25, 1000.0, 2166.0])
    cols = np.array([0.0, 3.5, 2069.0, 1234.0])
    t3, t1, t2 = ai.calc_pos_zyx(d1=rows, d2=cols)
    np.testing.assert_allclose(geometry.positions(rows, cols), np.stack((t1, t2, t3), axis=-1), rtol=1e-12)
    assert geometry.positions().shape == geometry.shape + (3,)


@pytest.mark.parametrize(("factor", "offset"), [(0.99, 0.0), (0.5, 0.3), (-1.0, -0.1)])
def test_polarization_matches_pyfai(factor, offset):
    ai, geometry = _pair(TILTED[0], small=True)
    expected = ai.polarization(geometry.shape, factor=factor, axis_offset=offset)  # float32
    np.testing.assert_allclose(geometry.polarization(factor, axis_offset=offset), expected, atol=2e-7)


def test_polarization_rejects_bad_factor():
    _, geometry = _pair(TILTED[0])
    with pytest.raises(ValueError, match=r"Polarization factor=1\.5 must lie in \[-1, 1\]"):
        geometry.polarization(1.5)


def test_binned_geometry_matches_pyfai_binned_detector():
    ai, geometry = _pair(TILTED[0], binning=2)
    binned = geometry.binned(2)
    assert binned.shape == tuple(ai.detector.shape) == (1083, 1035)
    assert (binned.pixel1, binned.pixel2) == (ai.detector.pixel1, ai.detector.pixel2)
    np.testing.assert_allclose(binned.q(), ai.center_array(binned.shape, unit="q_A^-1"), rtol=1e-6)
    chi = ai.center_array(binned.shape, unit="chi_deg")
    assert np.abs(_angle_difference_deg(binned.chi(), chi)).max() < 1e-4
    with pytest.raises(ValueError, match=r"Binning factor 0 must be a positive integer"):
        geometry.binned(0)


def test_poni_written_by_us_is_read_by_pyfai(tmp_path):
    _, geometry = _pair(TILTED[0])
    for candidate, name in ((geometry, "Eiger4M"), (geometry.binned(4), "Eiger4M"),
                            (dataclasses.replace(geometry, shape=(300, 200), detector_name=""), "Detector")):
        path = tmp_path / "ours.poni"
        candidate.to_poni(path)
        ai = pyFAI.load(str(path))
        assert type(ai.detector).__name__ == name
        assert tuple(ai.detector.shape) == candidate.shape
        assert (ai.detector.pixel1, ai.detector.pixel2) == (candidate.pixel1, candidate.pixel2)
        assert (ai.dist, ai.poni1, ai.poni2, ai.rot1, ai.rot2, ai.rot3, ai.wavelength) == (
            candidate.dist, candidate.poni1, candidate.poni2, candidate.rot1, candidate.rot2,
            candidate.rot3, candidate.wavelength)
        assert Geometry.from_poni(path) == candidate


def test_poni_written_by_pyfai_is_read_by_us(tmp_path):
    ai, geometry = _pair(TILTED[1])
    path = tmp_path / "pyfai.poni"
    ai.save(str(path))
    assert Geometry.from_poni(path) == geometry

    generic = AzimuthalIntegrator(dist=0.3, poni1=0.01, poni2=0.02, wavelength=1e-10,
                                  detector=pyFAI.detectors.Detector(pixel1=1e-4, pixel2=2e-4, max_shape=(100, 200)))
    generic.save(str(tmp_path / "generic.poni"))
    read = Geometry.from_poni(tmp_path / "generic.poni")
    assert (read.shape, read.pixel1, read.pixel2, read.detector_name) == ((100, 200), 1e-4, 2e-4, "")


def test_poni_version1_needs_detector_argument(tmp_path):
    path = tmp_path / "v1.poni"
    path.write_text("PixelSize1: 7.5e-05\nPixelSize2: 7.5e-05\nDistance: 0.41\nPoni1: 0.1\nPoni2: 0.1\n"
                    "Rot1: 0\nRot2: 0\nRot3: 0\nWavelength: 8.98e-11\n")
    with pytest.raises(ValueError, match=r"generic 'Detector' without max_shape in 'Detector_config'.*"
                                         r"pass detector='Eiger4M'"):
        Geometry.from_poni(path)
    geometry = Geometry.from_poni(path, detector="Eiger4M")
    assert geometry.shape == EIGER4M_SHAPE and geometry.detector_name == "Eiger4M"


GOOD_PONI = ("poni_version: 2.1\nDetector: Eiger4M\n"
             'Detector_config: {"pixel1": 7.5e-05, "pixel2": 7.5e-05, "orientation": 3}\n'
             "Distance: 0.41\nPoni1: 0.1\nPoni2: 0.1\nRot1: 0\nRot2: 0\nRot3: 0\nWavelength: 8.98e-11\n")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("Wavelength: 8.98e-11\n", "", r"has no 'Wavelength' key; add a line 'Wavelength: 8\.98e-11'"),
        ("Poni1: 0.1", "Poni1: 0.1m", r"key 'Poni1' has the value '0\.1m', which is not a number"),
        ("Detector: Eiger4M", "Detector: Foo1M",
         r"key 'Detector' names an unknown detector\. Unknown detector 'Foo1M': neither built in \(.*Eiger4M"),
        ('"orientation": 3}', '"orientation": 3', r"key 'Detector_config' is not valid JSON"),
        ('"orientation": 3', '"orientation": 1', r"orientation=1 is not supported"),
        ('"pixel1": 7.5e-05', '"pixel1": 1e-04', r"not integer multiples \(binnings\) of the Eiger4M pixel"),
    ],
)
def test_bad_poni_files_are_refused(tmp_path, old, new, message):
    path = tmp_path / "bad.poni"
    assert old in GOOD_PONI
    path.write_text(GOOD_PONI.replace(old, new))
    with pytest.raises(ValueError, match=message) as info:
        Geometry.from_poni(path)
    assert "bad.poni" in str(info.value)


def test_missing_poni_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"PONI file '.*nowhere\.poni' does not exist"):
        Geometry.from_poni(tmp_path / "nowhere.poni")


def test_q_lab_from_polar_and_pixel_from_q_lab_invert_q_lab():
    _, geometry = _pair(TILTED[0])
    rng = np.random.default_rng(0)
    rows = rng.uniform(0, geometry.shape[0] - 1, 200)
    cols = rng.uniform(0, geometry.shape[1] - 1, 200)
    q_lab = geometry.q_lab(rows, cols)
    row_back, col_back = geometry.pixel_from_q_lab(q_lab)
    np.testing.assert_allclose(row_back, rows, atol=1e-6)
    np.testing.assert_allclose(col_back, cols, atol=1e-6)

    t1, t2, t3 = np.moveaxis(geometry.positions(rows, cols), -1, 0)
    chi_deg = np.rad2deg(np.arctan2(t1, t2))
    np.testing.assert_allclose(geometry.q_lab_from_polar(np.linalg.norm(q_lab, axis=-1), chi_deg), q_lab,
                               atol=1e-12)
    # The full-grid arrays agree with the pointwise ones.
    np.testing.assert_allclose(geometry.q()[5, 7], np.linalg.norm(geometry.q_lab(5, 7)), rtol=1e-12)
    np.testing.assert_allclose(geometry.chi()[5, 7], np.rad2deg(np.arctan2(*geometry.positions(5, 7)[:2])))


def test_pixel_from_q_lab_is_nan_when_the_ray_misses():
    _, geometry = _pair(TILTED[0])
    backwards = np.array([0.0, 0.0, -2.0 * geometry.k])  # k_f = -k_i: back-scattering
    row, col = geometry.pixel_from_q_lab(backwards)
    assert np.isnan(row) and np.isnan(col)
    with pytest.raises(ValueError, match=r"q=20\.0 1/A is not on the Ewald sphere: valid is 0 <= q <= 2k"):
        geometry.q_lab_from_polar([1.0, 20.0], 0.0)


@pytest.mark.parametrize("rotations", [(0.0, 0.0, 0.0), (0.05, -0.03, 0.2)])
def test_from_beam_center_puts_the_direct_beam_on_the_given_pixel(rotations):
    geometry = Geometry.from_beam_center(0.41, (2100.3, 40.7), 13.8, rot1=rotations[0], rot2=rotations[1],
                                         rot3=rotations[2])
    row, col = geometry.pixel_from_q_lab(np.zeros(3))
    np.testing.assert_allclose((row, col), (2100.3, 40.7), atol=1e-9)
    assert geometry.shape == EIGER4M_SHAPE
    np.testing.assert_allclose(geometry.energy_kev, 13.8, rtol=1e-12)
    np.testing.assert_allclose(geometry.wavelength_A, 0.8984, atol=1e-4)  # the paper's 0.898 A
    np.testing.assert_allclose(geometry.k, 2 * np.pi / geometry.wavelength_A)
    if rotations == (0.0, 0.0, 0.0):
        assert geometry.poni1 == pytest.approx((2100.3 + 0.5) * EIGER_PIXEL)
        assert geometry.poni2 == pytest.approx((40.7 + 0.5) * EIGER_PIXEL)


def test_invalid_geometry_values_are_refused():
    with pytest.raises(ValueError, match=r"Geometry dist=-0\.41 must be a finite positive number"):
        Geometry(-0.41, 0.0, 0.0, 0.0, 0.0, 0.0, WAVELENGTH, EIGER_PIXEL, EIGER_PIXEL, EIGER4M_SHAPE)
    with pytest.raises(ValueError, match=r"Geometry shape=\(0, 5\) must be a pair of positive integers"):
        Geometry(0.41, 0.0, 0.0, 0.0, 0.0, 0.0, WAVELENGTH, EIGER_PIXEL, EIGER_PIXEL, (0, 5))
    with pytest.raises(ValueError, match=r"Unknown detector 'Pilatus': neither built in \(Eiger500k"):
        Geometry.from_beam_center(0.41, (10, 10), 13.8, detector="Pilatus")
    with pytest.raises(ValueError, match=r"Give both rows and cols"):
        Geometry.from_beam_center(0.41, (10, 10), 13.8).positions(rows=[1.0])
