"""Error propagation of fits/scan/boundary.py: the first-order standard errors of the rotation to
the bulk and of the compression against Monte Carlo draws of the inputs from their covariances
(the refits of Poisson replicates are benchmarks/pulls.py --line-mc)."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from fits.scan.angles import (
    lab_rotation_covariance,
    misorientation_vector,
    orientation_stderr_deg,
)
from fits.scan.boundary import compression_pct, rotation_stderr_deg
from xmodel import orientation

N_DRAWS = 3000


def _spd(rng, scale_deg):
    """A random anisotropic covariance (deg^2) with standard deviations about ``scale_deg``."""
    a = rng.normal(0, 1, (3, 3))
    return scale_deg ** 2 * (a @ a.T / 3 + 0.2 * np.eye(3))


def _perturb(R, cov_deg2, rng, n):
    """(n, 3, 3) draws ``exp([e]x) R`` with lab rotation vectors ``e ~ N(0, cov)``."""
    e = np.radians(rng.multivariate_normal(np.zeros(3), cov_deg2, n))
    return Rotation.from_rotvec(e).as_matrix() @ R


@pytest.mark.parametrize("member", [False, True])
def test_rotation_stderr_matches_draws(member):
    """The misorientation angle between a point and the chordal mean of K = 4 bulk orientations,
    each drawn from its own anisotropic covariance: the spread of 3000 draws is the propagated
    standard error within 6 % (the sampling error of a std over 3000 draws is 1.3 %), for a point
    outside the bulk and for a point that is one of the K (the cross term)."""
    rng = np.random.default_rng(11)
    base = Rotation.from_euler("xyz", [10, -20, 35], degrees=True).as_matrix()
    offsets = ([4.0, 0, 0], [-1.3, 0.5, 0], [-1.3, -0.5, 0.2], [-1.4, 0, -0.2])    # deg, lab rotation vectors
    members = [Rotation.from_rotvec(np.radians(o)).as_matrix() @ base for o in offsets]
    covs = [_spd(rng, 0.08) for _ in members]
    if member:
        R_i, C_i = members[0], covs[0]
    else:
        R_i, C_i = Rotation.from_rotvec(np.radians([2.0, 9.0, -3.0])).as_matrix() @ base, _spd(rng, 0.1)
    bulk = orientation.mean_orientation(np.stack(members))
    k = len(members)
    cov_bulk = sum(covs) / k ** 2
    cross = C_i / k if member else None
    want = rotation_stderr_deg(R_i[None], bulk, C_i[None], cov_bulk, None if cross is None else cross[None])[0]
    draws = [_perturb(R, C, rng, N_DRAWS) for R, C in zip(members, covs)]
    point = draws[0] if member else _perturb(R_i, C_i, rng, N_DRAWS)
    angle = np.array([np.degrees(float(orientation.misorientation_angle(
        orientation.mean_orientation(np.stack([d[j] for d in draws])), point[j]))) for j in range(N_DRAWS)])
    assert np.std(angle, ddof=1) == pytest.approx(want, rel=0.06)
    if member:      # without the correlation of a point with the mean it belongs to: 20 % too wide
        wrong = rotation_stderr_deg(R_i[None], bulk, C_i[None], cov_bulk)[0]
        assert wrong > 1.15 * np.std(angle, ddof=1)


def test_rotation_stderr_at_zero_angle_and_missing_covariance():
    """At a zero angle the error is the root mean square length of the error vector; a missing
    covariance gives NaN, never a number."""
    R = np.eye(3)[None]
    c = np.diag([0.01, 0.04, 0.09])[None]
    assert rotation_stderr_deg(R, np.eye(3), c, np.zeros((3, 3)))[0] == pytest.approx(np.sqrt(0.14))
    assert np.isnan(rotation_stderr_deg(R, np.eye(3), np.full((1, 3, 3), np.nan), np.zeros((3, 3)))[0])


def test_compression_stderr_matches_draws():
    """Compression 100 (1 - a / a_bulk) with a_bulk the mean of 3 bulk points: the spread of
    20000 Gaussian draws of the lattice constants is the propagated error within 3 %, for bulk
    points (correlated with the mean) and for compressed points outside it."""
    rng = np.random.default_rng(4)
    a = np.array([150.0, 150.2, 149.9, 141.0, 135.5])
    s = np.array([0.05, 0.08, 0.06, 0.2, 0.1])
    bulk = np.array([True, True, True, False, False])
    c, err = compression_pct(a, s, bulk)
    a_b = a[bulk].mean()
    np.testing.assert_allclose(c, 100 * (1 - a / a_b))
    draws = a + s * rng.normal(0, 1, (20000, a.size))
    cd = 100 * (1 - draws / draws[:, bulk].mean(axis=1, keepdims=True))
    np.testing.assert_allclose(np.std(cd, axis=0, ddof=1), err, rtol=0.03)
    c, err = compression_pct(a, s, np.zeros(5, bool))
    assert np.all(np.isnan(c)) and np.all(np.isnan(err))


def test_lab_rotation_covariance_is_the_spread_of_the_angle_errors():
    """Angle errors (tilt1, tilt2, inplane) drawn from C, mapped through the rotation of the
    decomposition: the lab rotation vectors between true and perturbed orientations have
    covariance M C M^T (`lab_rotation_covariance`) and rms length orientation_stderr_deg."""
    rng = np.random.default_rng(2)
    C = _spd(rng, 0.05)
    t1, t2, phi = 6.0, -9.0, 20.0
    base = np.asarray(orientation.base_orientation((0, 0, -1), (1, 0, 0)))

    def rot(a, b, c):
        return np.asarray(orientation.sl_orientation(base, np.radians(c), np.radians(a), np.radians(b)))

    R0 = rot(t1, t2, phi)
    d = rng.multivariate_normal(np.zeros(3), C, 4000)
    w = np.degrees(misorientation_vector(rot(t1 + d[:, 0], t2 + d[:, 1], phi + d[:, 2]), R0))
    lab = lab_rotation_covariance(C[None], t1, t2)[0]
    np.testing.assert_allclose(np.cov(w.T), lab, atol=0.06 * np.abs(lab).max())
    assert orientation_stderr_deg(C[None], t1, t2)[0] == pytest.approx(np.sqrt(np.trace(lab)))
