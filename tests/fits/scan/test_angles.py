"""Tests of fits/scan/angles.py: the reported zone axis, tilts and in-plane angle."""
import numpy as np

from fits.scan.angles import decompose_orientation
from xmodel import orientation


def test_decompose_orientation_recovers_the_twin_angles():
    base = orientation.base_orientation([-1, 1, 0], [0, 0, 1])
    R = np.asarray(orientation.sl_orientation(base, np.radians(-20.0), np.radians(3.0), np.radians(-2.0)), float)
    S = orientation.cubic_symmetry_operators()[5]
    out = decompose_orientation((R @ S)[None], [((0, 0, -1), (1, 0, 0)), ((-1, 1, 0), (0, 0, 1))])
    np.testing.assert_allclose([out["tilt1_deg"][0], out["tilt2_deg"][0], out["inplane_deg"][0]],
                               [3.0, -2.0, -20.0], atol=1e-6)
    np.testing.assert_allclose(out["tilt_deg"][0], np.hypot(3.0, 2.0), atol=1e-6)
