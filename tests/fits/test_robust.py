"""Cluster-robust covariance: the tiles, the sandwich and the widening of the quasi-likelihood errors."""
from __future__ import annotations

import numpy as np
import pytest

from fits.robust import (
    occupied,
    ring_clusters,
    robust_covariance,
    sandwich,
    tile_clusters,
    with_prior,
)


def test_tiles_follow_chi_in_degrees_and_q_relative():
    """Points share a cluster exactly when they share a tile of 4 deg along chi and 4 % in q."""
    chi = np.arange(-10.0, 10.0, 1.0)                   # 1 deg rows
    q = 0.05 * 1.01 ** np.arange(30)                     # 1 % log-spaced columns
    index = np.arange(chi.size * q.size)
    ids = tile_clusters(chi, q, index, 4.0, 0.04)
    row, col = np.divmod(index, q.size)
    t_chi = np.floor((chi[row] - chi[0]) / 4.0)
    t_q = np.floor(np.log(q[col] / q[0]) / np.log(1.04))
    same = (ids[:, None] == ids[None, :])
    np.testing.assert_array_equal(same, (t_chi[:, None] == t_chi[None, :]) & (t_q[:, None] == t_q[None, :]))
    assert ids.min() == 0 and ids.max() == np.unique(ids).size - 1          # numbered densely
    # a subset of the grid: the tiles of its points only
    sub = tile_clusters(chi, q, index[::7], 4.0, 0.04)
    assert sub.max() == np.unique(sub).size - 1
    with pytest.raises(ValueError, match="positive along chi"):
        tile_clusters(chi, q, index, 0.0, 0.04)
    with pytest.raises(ValueError, match="positive and finite in q"):
        tile_clusters(chi, q, index, 4.0, np.inf)
    with pytest.raises(ValueError, match="outside"):
        tile_clusters(chi, q, np.array([chi.size * q.size]), 4.0, 0.04)


def test_rings_hold_every_chi_of_a_q_band():
    """Whole rings: points share a cluster exactly when they share a 4 % band of q, whatever chi."""
    chi = np.arange(-10.0, 10.0, 1.0)
    q = 0.05 * 1.01 ** np.arange(30)
    index = np.arange(chi.size * q.size)
    ids = ring_clusters(q, index, 0.04)
    col = index % q.size
    t_q = np.floor(np.log(q[col] / q[0]) / np.log(1.04))
    np.testing.assert_array_equal(ids[:, None] == ids[None, :], t_q[:, None] == t_q[None, :])
    np.testing.assert_array_equal(ids, tile_clusters(chi, q, index, np.inf, 0.04))


def test_prior_residuals_are_clusters_of_their_own_and_empty_clusters_do_not_count():
    ids = with_prior(np.array([0, 0, 1, 2]), 2)
    np.testing.assert_array_equal(ids, [0, 0, 1, 2, 3, 4])
    # several clusterings: each row its own prior clusters
    np.testing.assert_array_equal(with_prior(np.array([[0, 0, 1, 2], [0, 0, 0, 0]]), 2),
                                  [[0, 0, 1, 2, 3, 4], [0, 0, 0, 0, 1, 2]])
    assert occupied(ids[:4], np.array([1.0, 0.0, 0.0, 2.0]), n_prior=2) == 4      # clusters 0 and 2, two priors


def test_sandwich_of_independent_residuals_is_the_inverse_information():
    """With residuals of unit variance, one cluster each, the sandwich estimates ``A^-1``: over
    many draws its mean is ``A^-1`` within its sampling error; one cluster is no estimate."""
    rng = np.random.default_rng(1)
    jac = rng.normal(size=(400, 3)) * [1.0, 3.0, 0.5]
    a = jac.T @ jac
    inv = np.linalg.inv(a)
    draws = []
    for _ in range(400):
        r = rng.normal(size=400)
        g = jac * r[:, None]
        draws.append(sandwich(a, g.T @ g, 400))
    np.testing.assert_allclose(np.mean(draws, axis=0).diagonal(), inv.diagonal(), rtol=0.05)
    assert np.all(np.isnan(sandwich(a, a, 1)))
    assert np.all(np.isnan(sandwich(np.zeros((3, 3)), a, 10)))


def test_clustered_residuals_widen_the_errors_as_their_correlation_does():
    """Residuals shared by blocks of m points (the misfit of one peak): the variance of the
    least-squares estimate is m times the independent one for a slowly varying Jacobian, and the
    clustered sandwich sees it where the point-wise one (one point per cluster) does not."""
    rng = np.random.default_rng(2)
    n, m = 2000, 10
    x = np.linspace(-1, 1, n)
    jac = np.column_stack([np.ones(n), x])
    a = jac.T @ jac
    blocks = np.repeat(np.arange(n // m), m)
    est, clustered, pointwise = [], [], []
    for _ in range(300):
        r = rng.normal(size=n // m)[blocks]                 # one residual per block: unit variance per point
        est.append(np.linalg.solve(a, jac.T @ r))
        g = np.zeros((n // m, 2))
        np.add.at(g, blocks, jac * r[:, None])
        clustered.append(np.diag(sandwich(a, g.T @ g, n // m)))
        gp = jac * r[:, None]
        pointwise.append(np.diag(sandwich(a, gp.T @ gp, n)))
    true_var = np.var(est, axis=0)
    np.testing.assert_allclose(np.mean(clustered, axis=0), true_var, rtol=0.15)
    np.testing.assert_allclose(true_var, m * np.diag(np.linalg.inv(a)), rtol=0.2)
    assert np.all(np.mean(pointwise, axis=0) < 0.2 * true_var)


def test_each_variance_is_the_larger_and_the_correlations_the_quasi_likelihoods():
    rng = np.random.default_rng(3)
    u = rng.normal(size=(3, 3))
    quasi = u @ u.T + np.eye(3)
    v = rng.normal(size=(3, 3))
    sand = v @ v.T + 0.5 * np.eye(3)
    c = robust_covariance(quasi, sand)
    np.testing.assert_allclose(np.diag(c), np.maximum(np.diag(quasi), np.diag(sand)))
    corr = lambda m: m / np.sqrt(np.outer(np.diag(m), np.diag(m)))
    np.testing.assert_allclose(corr(c), corr(quasi))
    assert np.linalg.eigvalsh(c).min() > 0
    np.testing.assert_allclose(robust_covariance(quasi, 0.5 * quasi), quasi)          # narrower: unchanged
    np.testing.assert_allclose(robust_covariance(quasi, 2.0 * quasi), 2.0 * quasi)    # wider: the sandwich
    np.testing.assert_array_equal(robust_covariance(quasi, np.full((3, 3), np.nan)), quasi)
    undetermined = quasi.copy()
    undetermined[2, :] = undetermined[:, 2] = np.nan
    out = robust_covariance(undetermined, 2.0 * quasi)
    np.testing.assert_allclose(out[:2, :2], 2.0 * quasi[:2, :2])
    assert np.all(np.isnan(out[2]))
