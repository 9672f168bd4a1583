"""The orientation uncertainty of fits/scan/angles.py: the rotation Jacobian against finite
differences of the SL orientation, and the one-number uncertainty against hand-computed cases."""
import numpy as np
import pytest

from fits.scan.angles import orientation_stderr_deg, rotation_jacobian
from xmodel import orientation


def _R(t1, t2, phi, base):
    return np.asarray(orientation.sl_orientation(base, np.radians(phi), np.radians(t1), np.radians(t2)), float)


def test_rotation_jacobian_equals_finite_differences():
    base = np.asarray(orientation.base_orientation((-1, 1, 0), (0, 0, 1)), float)
    t1, t2, phi, h = 6.0, -11.0, 25.0, 1e-4
    R0 = _R(t1, t2, phi, base)
    m = rotation_jacobian(t1, t2)[0]
    for j, d in enumerate(np.eye(3)):
        dR = (_R(t1 + h * d[0], t2 + h * d[1], phi + h * d[2], base)
              - _R(t1 - h * d[0], t2 - h * d[1], phi - h * d[2], base)) / (2 * np.radians(h))
        W = dR @ R0.T                                    # [w]x per radian
        w = np.array([W[2, 1], W[0, 2], W[1, 0]])
        np.testing.assert_allclose(w, m[:, j], atol=1e-7)


def test_orientation_stderr_of_hand_computed_covariances():
    # uncorrelated angles at zero tilt: the three axes are e1, e2, e3
    c = np.diag([0.01, 0.04, 0.0025])
    np.testing.assert_allclose(orientation_stderr_deg(c[None], 0.0, 0.0), [np.sqrt(0.0525)], rtol=1e-12)
    # only the in-plane angle uncertain: its axis is a unit vector at any tilt
    c = np.diag([0.0, 0.0, 0.09])
    np.testing.assert_allclose(orientation_stderr_deg(c[None], [8.0], [-5.0]), [0.3])
    # at tilt2 = 90 deg the in-plane axis is e1: fully anticorrelated tilt1 and inplane cancel
    c = 0.04 * np.array([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 1.0]])
    assert orientation_stderr_deg(c[None], 0.0, 90.0)[0] < 1e-8
    assert np.isnan(orientation_stderr_deg(np.full((1, 3, 3), np.nan), 0.0, 0.0)[0])


def test_reported_angle_errors_are_the_spread_of_decomposed_draws():
    """A red-domain orientation tilted 9 deg: orientations drawn around it from a lab rotation
    covariance whose tilt errors are ten times the in-plane one, decomposed as the scan fit
    reports them; `report_angles` gives their standard deviations within 6 % (2000 draws). The
    lab axes (the fit's own parametrisation) would give the in-plane error 15 % too small."""
    from scipy.spatial.transform import Rotation

    from fits.scan.angles import COVARIANCE_KEY, angle_covariance, report_angles
    from fits.scan.settings import DEFAULT_ZONES

    base = np.asarray(orientation.base_orientation((0, 0, -1), (1, 0, 0)), float)
    R0 = _R(3.0, -8.5, -75.0, base)
    lab = np.diag([0.05, 0.05, 0.005]) ** 2
    n = 2000
    rng = np.random.default_rng(8)
    draws = Rotation.from_rotvec(np.radians(rng.multivariate_normal(np.zeros(3), lab, n))).as_matrix() @ R0
    ang = orientation.decompose_orientation(draws, list(DEFAULT_ZONES))
    out = {"orientation_matrix": R0[None], COVARIANCE_KEY: lab[None], "zone_axis": np.full((1, 3), np.nan)}
    for k in ("tilt_deg", "tilt1_deg", "tilt2_deg", "inplane_deg", "tilt1_deg_stderr", "tilt2_deg_stderr",
              "inplane_deg_stderr"):
        out[k] = np.full(1, np.nan)
    report_angles(out, np.array([0]), DEFAULT_ZONES)
    assert out["tilt1_deg"][0] == pytest.approx(3.0, abs=1e-6) and out["tilt2_deg"][0] == pytest.approx(-8.5, abs=1e-6)
    for k in ("tilt1_deg", "tilt2_deg", "inplane_deg"):
        assert np.std(ang[k], ddof=1) == pytest.approx(out[k + "_stderr"][0], rel=0.06), k
    on_lab_axes = np.sqrt(angle_covariance(lab[None], 0.0, 0.0)[0, 2, 2])
    assert on_lab_axes < 0.9 * np.std(ang["inplane_deg"], ddof=1)
    # a frame without a covariance keeps the error the fit wrote
    out[COVARIANCE_KEY][:] = np.nan
    out["inplane_deg_stderr"][:] = 0.123
    report_angles(out, np.array([0]), DEFAULT_ZONES)
    assert out["inplane_deg_stderr"][0] == 0.123
