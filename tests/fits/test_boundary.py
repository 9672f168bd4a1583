"""Tests of fits/boundary.py helpers that need no refinement."""
import numpy as np
import pytest

from fits.boundary import _mean_orientation, line_points
from xmodel import orientation


def test_line_points_in_order():
    yy, xx = np.meshgrid(np.arange(5) * 0.25, np.arange(8) * 0.25, indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], 1)
    idx, dist = line_points(pos, (0.5, 0.0), (0.5, 1.75))
    np.testing.assert_array_equal(idx, 2 * 8 + np.arange(8))
    np.testing.assert_allclose(dist, np.arange(8) * 0.25)
    with pytest.raises(ValueError, match="are the same point"):
        line_points(pos, (0.5, 0.0), (0.5, 0.0))


def test_mean_orientation_under_symmetry():
    R = np.asarray(orientation.rotation_matrix(np.radians([3.0, 1.0, 2.0])), float)
    S = orientation.cubic_symmetry_operators()
    m = _mean_orientation(np.stack([R, R @ S[3], R @ S[7]]))
    assert np.degrees(orientation.misorientation_angle(m, R)) < 1e-6
