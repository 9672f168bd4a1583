"""The orientation uncertainty of fits/scan/angles.py: the rotation Jacobian against finite
differences of the SL orientation, and the one-number uncertainty against hand-computed cases."""
import numpy as np

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
