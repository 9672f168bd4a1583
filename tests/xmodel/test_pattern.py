"""The forward model: sparse evaluation against the dense reference, gradients, vmap."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xmodel.config import default_paths, load_config
from xmodel.experiment import Experiment
from xmodel.parameters import CONTINUOUS, ModelParams, params_from_config, structure_from_config
from xmodel.pattern import TERMS, PatternModel, build_support, dense_pattern
from xmodel.pixels import PixelSet
from xmodel.peaks import reflection_table


def _setup(domain: str, binning: int, dtype=jnp.float32):
    cfg = load_config(default_paths(domain))
    ex = Experiment.from_config(cfg, binning=binning)
    return cfg, ex, structure_from_config(cfg), params_from_config(cfg, dtype=dtype)


def _peak_heights(ex, st, params):
    """Dense-model intensity at the brightest point of every lit reflection, per lattice."""
    rows = reflection_table(ex, st, params, min_relative=0.05)
    out = {}
    for lat in ("SL", "AL"):
        r = [x for x in rows if x["lattice"] == lat]
        px = PixelSet.from_pixels(ex.geometry, [x["row"] for x in r], [x["col"] for x in r],
                                  polarization_factor=ex.polarization_factor)
        out[lat] = float(dense_pattern(px, st, params).max())
    return out


@pytest.mark.parametrize("domain", ["yellow", "purple", "orange"])
def test_sparse_equals_dense_reference(domain):
    """Sparse (q-band, pruned members) evaluation == every pixel x every reflection."""
    cfg, ex, st, params = _setup(domain, binning=8)
    px = ex.pixels()
    model = PatternModel(px, st, params)
    sparse = np.asarray(model(params))
    dense = dense_pattern(px, st, params)
    peaks = _peak_heights(ex, st, params)
    diff = np.abs(sparse - dense)
    assert diff.max() <= 1e-3 * peaks["SL"]
    # the weak AL peaks too, judged against their own height, in the WAXS region
    waxs = np.flatnonzero(px.q_abs > 1.0)
    assert diff[waxs].max() <= 1e-3 * peaks["AL"]
    assert model.support.n_pairs < 0.2 * px.valid.sum() * (len(st.sl_hkl) + len(st.al_hkl))
    assert np.all(sparse[~px.valid] == 0)


def test_pattern_image_shape_dtype_and_mask():
    cfg, ex, st, params = _setup("yellow", binning=8)
    model = PatternModel(ex.pixels(), st, params)
    img = model.image(params)
    assert img.shape == ex.geometry.shape and img.dtype == jnp.float32
    assert np.all(np.asarray(img)[ex.mask] == 0)
    assert np.all(np.isfinite(np.asarray(img)))


def _small_pixels(ex):
    """A polar grid through the SL 200/220 bands and the AL 111/200 bands."""
    q = np.concatenate([np.linspace(0.075, 0.125, 14), np.linspace(1.75, 2.2, 14)])
    chi = np.linspace(-100, 180, 36)
    return PixelSet.from_polar(ex.geometry, q, chi, ex.mask, ex.polarization_factor)


def _fd_params(params: ModelParams) -> ModelParams:
    """Parameters away from symmetric points so that every derivative is non-trivial."""
    return params.replace(inplane=params.inplane + 0.05, tilt1=0.03, tilt2=-0.04,
                          misorientation=jnp.asarray([0.02, -0.03, 0.01]), background=0.3,
                          sl_mosaic=0.05, sl_radial_width=0.004)


def test_gradients_against_finite_differences_float64():
    cfg, ex, st, params = _setup("yellow", binning=8, dtype=jnp.float64)
    params = _fd_params(params)
    px = _small_pixels(ex)
    model = PatternModel(px, st, params, dtype=jnp.float64, orientation_margin_deg=None, width_factor=2.0)
    w = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, px.size))
    loss = model.value_and_grad(lambda intensity, p: jnp.sum(w * intensity))
    value, grad = loss(params)
    assert np.isfinite(float(value))
    f = model.compose(lambda intensity, p: jnp.sum(w * intensity))
    for name in CONTINUOUS:
        x0 = np.asarray(getattr(params, name), np.float64)
        g = np.asarray(getattr(grad, name))
        for j in np.ndindex(x0.shape):
            h = 1e-6 * max(1.0, abs(x0[j])) if name not in ("sl_scale", "diffuse_scale", "al_scale") else 1e-3
            xp, xm = x0.copy(), x0.copy()
            xp[j] += h
            xm[j] -= h
            fd = (float(f(params.replace(**{name: xp}))) - float(f(params.replace(**{name: xm})))) / (2 * h)
            assert g[j] == pytest.approx(fd, rel=2e-5, abs=1e-6 * abs(float(value))), (name, j)
            assert abs(fd) > 0, f"{name} has no effect on the pattern"


def test_jacobian_forward_mode_matches_reverse():
    cfg, ex, st, params = _setup("green", binning=8, dtype=jnp.float64)
    params = _fd_params(params)
    px = _small_pixels(ex)
    model = PatternModel(px, st, params, dtype=jnp.float64, orientation_margin_deg=None)
    rows = np.flatnonzero(px.valid)[:50]
    jac = model.jacobian(rows)(params)
    w = np.zeros(px.size)
    w[rows[7]] = 1.0
    _, grad = model.value_and_grad(lambda intensity, p: jnp.sum(jnp.asarray(w) * intensity))(params)
    for name in ("lattice_constant", "disorder", "inplane", "al_scale", "radius"):
        np.testing.assert_allclose(np.asarray(getattr(jac, name))[7], np.asarray(getattr(grad, name)), rtol=1e-9, atol=1e-12)


def test_components_weighted_by_the_scales_sum_to_the_model():
    cfg, ex, st, params = _setup("purple", binning=8, dtype=jnp.float64)
    params = _fd_params(params)
    px = _small_pixels(ex)
    model = PatternModel(px, st, params, orientation_margin_deg=None, dtype=jnp.float64)
    terms = np.asarray(model.components()(model.arrays, params))
    assert terms.shape == (len(TERMS), px.size)
    scales = np.array([float(getattr(params, t)) for t in TERMS])
    full = np.asarray(model(params))
    np.testing.assert_allclose(scales @ terms, full, rtol=1e-12, atol=1e-12 * full.max())
    al_only = np.asarray(model.components(("al_scale",))(model.arrays, params))
    np.testing.assert_array_equal(al_only[0], terms[TERMS.index("al_scale")])
    with pytest.raises(ValueError, match=r"components: unknown or no terms \['radius'\]"):
        model.components(("radius",))


def test_vmap_equals_loop():
    cfg, ex, st, params = _setup("purple", binning=8, dtype=jnp.float64)
    px = _small_pixels(ex)
    model = PatternModel(px, st, params, orientation_margin_deg=None, dtype=jnp.float64)
    variants = [params.replace(lattice_constant=a, inplane=params.inplane + d, disorder=params.disorder * s)
                for a, d, s in [(150.0, 0.0, 1.0), (145.0, 0.1, 1.2), (152.0, -0.2, 0.8)]]
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *variants)
    batch = np.asarray(jax.vmap(model)(stacked))
    loop = np.stack([np.asarray(model(v)) for v in variants])
    np.testing.assert_allclose(batch, loop, rtol=1e-10, atol=1e-12 * loop.max())


def test_polar_grid_matches_dense_and_support_errors():
    cfg, ex, st, params = _setup("yellow", binning=4)
    q = np.linspace(0.02, 2.4, 300)
    chi = np.linspace(-180, 180, 90, endpoint=False)
    px = ex.polar_pixels(q, chi)
    model = PatternModel(px, st, params)
    img = np.asarray(model.image(params))
    assert img.shape == (90, 300)
    dense = dense_pattern(px, st, params).reshape(img.shape)
    assert np.abs(img - dense).max() <= 1e-3 * dense.max()
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), params, params)
    with pytest.raises(ValueError, match="parameters of one pattern, not a batch"):
        build_support(px, st, stacked)
