"""Tests of fits/scan/linear.py: the NNLS on the normal equations equals NNLS on the full weighted
system; the relationship variants are the distinct NC orientations."""
import numpy as np
from scipy.optimize import nnls

from fits.scan.linear import linear_scales, poisson_deviance_gain, poisson_deviance_np, variant_scales


def _full_nnls(components, observed, valid, weight):
    """Reference: NNLS of the (P, k) Pearson-weighted system, columns scaled to unit norm."""
    out = np.zeros((observed.shape[0], components.shape[1]))
    for b in range(observed.shape[0]):
        v = valid[b] & (weight > 0)
        y, n = observed[b, v], weight[v]
        w = np.sqrt(n / np.maximum(y, 1.0 / n))
        A = components[b][:, v].T * w[:, None]
        norm = np.maximum(np.linalg.norm(A, axis=0), 1e-30)
        out[b] = nnls(A / norm, y * w, maxiter=200)[0] / norm
    return out


def test_normal_equation_nnls_matches_the_full_system():
    rng = np.random.default_rng(4)
    B, k, P = 4, 4, 3000
    x = np.linspace(-1, 1, P)
    base = np.stack([np.exp(-0.5 * ((x - 0.3) / 0.05) ** 2), np.exp(-2 * np.abs(x)), np.exp(-0.5 * (x / 0.02) ** 2),
                     np.ones(P)])
    comps = np.repeat(base[None], B, axis=0) * rng.uniform(0.5, 2.0, (B, k, 1))
    comps[2, 2] = 0.0                                     # a frame without AL term
    truth = np.array([[50.0, 3.0, 20.0, 0.5], [0.0, 3.0, 20.0, 0.5], [50.0, 3.0, 0.0, 0.5], [5.0, 0.0, 1.0, 0.1]])
    weight = rng.integers(0, 5, P).astype(float)          # pixels per bin, some bins empty
    counts = rng.poisson(np.einsum("bj,bjp->bp", truth, comps) * weight)
    observed = counts / np.maximum(weight, 1.0)
    valid = np.ones((B, P), bool)
    valid[1, :200] = False
    scales, dev = linear_scales(comps, observed, valid, weight)
    ref = _full_nnls(comps, observed, valid, weight)
    np.testing.assert_allclose(scales, ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())
    assert scales[2, 2] == 0.0 and np.all(scales >= 0)
    mu = np.einsum("bj,bjp->bp", ref, comps)
    np.testing.assert_allclose(dev, poisson_deviance_np(mu, observed, valid & (weight > 0), weight), rtol=1e-9)



def test_variant_scales_equal_linear_scales_per_variant():
    """The AL variants' fits sharing the other terms' normal equations equal one `linear_scales`
    per variant, the scales in COMPONENTS order (sl, diffuse, al, background)."""
    rng = np.random.default_rng(5)
    B, V, P = 3, 5, 2000
    x = np.linspace(-1, 1, P)
    base = np.stack([np.exp(-0.5 * ((x - 0.3) / 0.05) ** 2), np.exp(-2 * np.abs(x)), np.ones(P)])
    base = np.repeat(base[None], B, axis=0) * rng.uniform(0.5, 2.0, (B, 3, 1))
    al = np.stack([np.exp(-0.5 * ((x - c) / 0.02) ** 2) for c in np.linspace(-0.8, 0.8, V)])
    al = np.repeat(al[:, None], B, axis=1) * rng.uniform(0.5, 2.0, (V, B, 1))
    al[1, 2] = 0.0                                          # a variant without AL signal on one frame
    weight = rng.integers(0, 4, P).astype(float)
    mu = 40.0 * base[:, 0] + 3.0 * base[:, 1] + 15.0 * al[2] + 0.4 * base[:, 2]
    observed = rng.poisson(mu * weight) / np.maximum(weight, 1.0)
    valid = np.ones((B, P), bool)
    valid[0, :300] = False
    scales, dev = variant_scales(base, al, observed, valid, weight)
    assert scales.shape == (V, B, 4) and dev.shape == (V, B)
    for v in range(V):
        comps = np.stack([base[:, 0], base[:, 1], al[v], base[:, 2]], axis=1)
        ref_s, ref_d = linear_scales(comps, observed, valid, weight)
        np.testing.assert_allclose(scales[v], ref_s, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(dev[v], ref_d, rtol=1e-9)
    assert np.all(np.argmin(dev, axis=0) == 2)              # the variant in the data fits best


def test_poisson_deviance_equals_the_direct_sum():
    """The deviance from one logarithm per model value equals ``2 sum n [y log(y/mu) - (y - mu)]``
    summed point by point, with the data broadcast against model variants, unused points NaN in
    the data and zero counts."""
    rng = np.random.default_rng(5)
    V, B, P = 3, 4, 20000
    n = rng.integers(1, 300, (B, P)).astype(float)
    lam = rng.gamma(2.0, 20.0, (B, P))
    y = rng.poisson(lam * n) / n
    y[:, :50] = 0.0
    valid = rng.random((B, P)) > 0.05
    y[~valid] = np.nan
    mu = lam[None] * rng.uniform(0.9, 1.1, (V, B, P))
    mu[:, :, 50:60] = 0.0                                   # floored at 1e-6
    yc = np.nan_to_num(y)
    m = np.maximum(mu, 1e-6)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(yc > 0, yc * np.log(np.where(yc > 0, yc, 1.0) / m), 0.0) - (yc - m)
    direct = 2.0 * np.sum(np.where(valid, n * t, 0.0), axis=-1)
    got = poisson_deviance_np(mu, yc[None], valid[None], n[None])
    assert got.shape == (V, B)
    np.testing.assert_allclose(got, direct, rtol=1e-10, atol=1e-4)
    np.testing.assert_allclose(poisson_deviance_np(mu[0], yc, valid, n), direct[0], rtol=1e-10, atol=1e-4)
    assert np.isnan(poisson_deviance_np(np.where(valid, np.nan, mu[0]), yc, valid, n)).all()
    assert np.isfinite(poisson_deviance_np(np.where(valid, mu[0], np.nan), yc, valid, n)).all()


def test_deviance_gain_is_taken_point_by_point():
    """``D(without) - D(with)`` equals the difference of the direct sums where both are moderate, and
    stays exact where one model value of 1e14 in a bin of 10,000 pixels, common to both models, puts
    both sums near 2e18 (where their difference is float64 rounding noise of hundreds of units)."""
    rng = np.random.default_rng(6)
    B, P = 3, 5000
    n = rng.integers(1, 50, (B, P)).astype(float)
    lam = rng.gamma(2.0, 2.0, (B, P))
    y = rng.poisson(lam * n) / n
    valid = rng.random((B, P)) > 0.05
    peak = np.where(np.arange(P) % 97 == 0, 3.0, 0.0)[None]             # a term on some points
    without, with_ = lam, lam + peak
    gain = poisson_deviance_gain(without, with_, y, valid, n)
    direct = poisson_deviance_np(without, y, valid, n) - poisson_deviance_np(with_, y, valid, n)
    np.testing.assert_allclose(gain, direct, rtol=1e-9, atol=1e-6)
    # one point of both models at 1e14: its own difference is zero, the gain that of the others
    big_without, big_with = without.copy(), with_.copy()
    big_without[:, 10] = big_with[:, 10] = 1e14
    n[:, 10] = 10000.0                                                   # a wide-angle bin: 1e18 counts
    valid_big = valid.copy()
    valid_big[:, 10] = True
    others = valid.copy()
    others[:, 10] = False
    expected = poisson_deviance_gain(without, with_, y, others, n)
    np.testing.assert_allclose(poisson_deviance_gain(big_without, big_with, y, valid_big, n), expected, rtol=1e-9)
    naive = poisson_deviance_np(big_without, y, valid_big, n) - poisson_deviance_np(big_with, y, valid_big, n)
    assert np.max(np.abs(naive - expected)) > 1.0                        # the difference of the sums is noise
