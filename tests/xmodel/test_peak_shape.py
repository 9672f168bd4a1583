"""The SL peak shape (`xmodel.pattern.sl_peak_widths`, ``model.sl_peak_shape``): the "crystal"
shape keeps each reflection's integrated intensity, its model is differentiable and equals the dense
reference, the reflection table follows it, and the default "mosaic" shape is the model of earlier
versions bit for bit."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.xmodel.test_pattern import _check_gradients, _fd_params, _small_pixels
from xmodel.config import default_paths, load_config
from xmodel.experiment import Experiment
from xmodel.parameters import Structure, params_from_config, structure_from_config
from xmodel.pattern import (
    SL_REFERENCE_SIGMA,
    TWO_PI,
    PatternModel,
    dense_pattern,
    saxs_factors,
    shell_sum,
    sl_peak_widths,
)
from xmodel.peaks import reflection_table
from xmodel.pixels import PixelSet


def _integral(g, sigma_r, mosaic, shape, paracrystal=0.0, n=48):
    """Numerical 3D integral over reciprocal space of one reflection G = (0, 0, g) of the model
    (peak of `shell_sum` times the shape's height), midpoint rule on a box of +-7 sigmas."""
    sr, st, height = (float(np.asarray(v)) for v in sl_peak_widths(g, sigma_r, mosaic, shape, paracrystal))
    axes_t = (np.arange(n) + 0.5) / n * 14.0 * st - 7.0 * st
    axis_r = (np.arange(n) + 0.5) / n * 14.0 * sr - 7.0 * sr + g
    x, y, z = np.meshgrid(axes_t, axes_t, axis_r, indexing="ij")
    q = np.stack([x.ravel(), y.ravel(), z.ravel()])
    vals = jax.jit(shell_sum)(jnp.asarray(q), jnp.asarray(np.sum(q * q, axis=0)), jnp.asarray([[0.0, 0.0, g]]),
                              g, sr, st)
    dv = (14.0 * st / n) ** 2 * (14.0 * sr / n)
    return height * float(np.sum(np.asarray(vals, np.float64))) * dv


def test_crystal_integrated_intensity_is_independent_of_the_widths():
    """Under the "crystal" shape a reflection's integral over reciprocal space is
    ``(2 pi)^{3/2} sigma_ref^3`` (times sl_scale B) for any size, mosaic and paracrystal term; under
    "mosaic" it grows as ``sigma_r (|G| sigma_mosaic)^2``."""
    g = 0.2
    expected = (2 * np.pi) ** 1.5 * SL_REFERENCE_SIGMA ** 3
    for sigma_r, mosaic_deg, para in ((1.0e-3, 0.5, 0.0), (3.0e-3, 1.0, 0.0), (1.5e-3, 2.0, 0.0),
                                      (1.5e-3, 1.0, 0.06)):
        got = _integral(g, sigma_r, np.radians(mosaic_deg), "crystal", para)
        # the curved cap adds (sigma_r / g)^2 <= 2e-4 to the flat Gaussian's integral
        assert got == pytest.approx(expected, rel=1e-3), (sigma_r, mosaic_deg, para)
    wide = _integral(g, 1.5e-3, np.radians(2.0), "mosaic")
    narrow = _integral(g, 1.5e-3, np.radians(1.0), "mosaic")
    assert wide / narrow == pytest.approx(4.0, rel=1e-3)


def test_sl_peak_widths_formulas_and_errors():
    g = np.array([0.07, 0.2])
    sr, st, h = sl_peak_widths(g, 1.5e-3, 0.02)
    assert sr == 1.5e-3 and np.array_equal(st, g * 0.02) and h == 1.0
    sr, st, h = sl_peak_widths(g, 1.5e-3, 0.02, "crystal", 0.06)
    np.testing.assert_allclose(sr, np.sqrt(1.5e-3 ** 2 + (0.06 * g ** 2) ** 2), rtol=1e-14)
    np.testing.assert_allclose(st, np.sqrt(1.5e-3 ** 2 + (0.02 * g) ** 2), rtol=1e-14)
    np.testing.assert_allclose(h, SL_REFERENCE_SIGMA ** 3 / (sr * st ** 2), rtol=1e-14)
    with pytest.raises(ValueError, match="SL peak shape 'gauss' is unknown"):
        sl_peak_widths(g, 1.5e-3, 0.02, "gauss")
    with pytest.raises(ValueError, match=r"sl_peak_shape 'gauss' is unknown.*model.sl_peak_shape"):
        Structure.build(sl_peak_shape="gauss")
    with pytest.raises(ValueError, match=r"sl_paracrystal = 0.05 A.*0 unless model.sl_peak_shape"):
        Structure.build(sl_paracrystal=0.05)


def test_config_reaches_the_structure():
    cfg = load_config(default_paths("yellow"), ["model.sl_peak_shape=crystal", "model.sl_paracrystal=0.06"])
    st = structure_from_config(cfg)
    assert st.sl_peak_shape == "crystal" and st.sl_paracrystal == 0.06
    assert structure_from_config(load_config(default_paths("yellow"))).sl_peak_shape == "mosaic"


def _setup(dtype=jnp.float32):
    cfg = load_config(default_paths("yellow"))
    ex = Experiment.from_config(cfg, binning=8)
    return ex, structure_from_config(cfg), params_from_config(cfg, dtype=dtype)


def test_default_shape_is_the_mosaic_model_bit_for_bit():
    """The default model's SL term equals, bit for bit, the model of earlier versions written out
    here: per shell ``B * shell_sum(sigma_r, |G| sigma_mosaic)``, height sl_scale."""
    ex, st, params = _setup()
    assert st.sl_peak_shape == "mosaic"
    px = _small_pixels(ex)
    model = PatternModel(px, st, params)
    layout = model.layout

    def old(arrays, p):
        _, bragg, place = saxs_factors(layout, arrays, p)
        rot = p.sl_orientation()
        sl = jnp.zeros_like(bragg)
        for i, (n2, _) in enumerate(layout.sl_shells):
            g = float(TWO_PI * np.sqrt(n2)) / p.lattice_constant
            g_rot = (TWO_PI / p.lattice_constant) * (arrays["sl_hkl"][i] @ rot.T)
            vals = shell_sum(arrays["sl_q"][i], arrays["sl_q2"][i], g_rot, g, p.sl_radial_width, g * p.sl_mosaic)
            sl = sl.at[arrays["sl_points"][i]].add(bragg[arrays["sl_points"][i]] * vals, indices_are_sorted=True,
                                                   unique_indices=True)
        return place(sl)

    new = np.asarray(jax.jit(model.components(("sl_scale",)))(model.arrays, params))[0]
    assert new.max() > 0
    assert np.array_equal(new, np.asarray(jax.jit(old)(model.arrays, params)))


def test_crystal_model_equals_dense_and_its_gradients_finite_differences_float64():
    """The "crystal" shape with a paracrystal term: sparse model == dense reference, and the
    gradients of the point and bin-averaged models agree with central finite differences (float64)."""
    ex, st, params = _setup(jnp.float64)
    st = dataclasses.replace(st, sl_peak_shape="crystal", sl_paracrystal=0.06)
    params = _fd_params(params)
    px = _small_pixels(ex)
    opts = {"dtype": jnp.float64, "orientation_margin_deg": None, "width_factor": 2.0}
    model = PatternModel(px, st, params, **opts)
    assert model.layout.sl_shape == "crystal"
    sparse = np.asarray(model(params))
    dense = dense_pattern(px, st, params, dtype=jnp.float64)
    sl = np.asarray(jax.jit(model.components(("sl_scale",)))(model.arrays, params))[0] * float(params.sl_scale)
    assert np.max(np.abs(sparse - dense)) < 1e-3 * sl.max()
    _check_gradients(model, params, seed=3)
    u = px.q_lab / np.maximum(px.q_abs, 1e-12)[:, None]
    spread = (0.01 * px.q_abs[:, None, None]) ** 2 / 12 * u[:, :, None] * u[:, None, :]
    binned = PixelSet(px.q_lab, px.weight, px.valid, px.shape, "polar", spread)
    _check_gradients(PatternModel(binned, st, params, **opts), params, seed=4)


def test_reflection_table_follows_the_shape():
    """The table's SL heights are the model's SL intensity at the table's pixels, for both shapes
    (the "crystal" heights differ from the "mosaic" ones by more than 10 %)."""
    ex, st, params = _setup()
    params = params.replace(diffuse_scale=0.0, al_scale=0.0, background=0.0)
    heights = {}
    for shape in ("mosaic", "crystal"):
        s = dataclasses.replace(st, sl_peak_shape=shape)
        rows = [r for r in reflection_table(ex, s, params, min_relative=0.05) if r["lattice"] == "SL"]
        assert rows
        px = PixelSet.from_pixels(ex.geometry, [r["row"] for r in rows], [r["col"] for r in rows],
                                  polarization_factor=ex.polarization_factor)
        np.testing.assert_allclose(dense_pattern(px, s, params), [r["intensity"] for r in rows], rtol=1e-3)
        heights[shape] = {tuple(r["hkl"]): r["intensity"] for r in rows}
    common = heights["mosaic"].keys() & heights["crystal"].keys()
    assert common and max(abs(heights["crystal"][k] / heights["mosaic"][k] - 1) for k in common) > 0.1


def test_size_broadening_is_a_ball_and_mosaic_a_cap():
    """With a size width the peak is a ball about G: with no mosaic, `shell_sum` is exactly
    ``exp(-|q - G|^2 / 2 sigma^2)`` (`xmodel.pattern.ball_sigmas`), in 3D, off the sphere too;
    without ``size_var`` it is the cap, Gaussian in ``|q| - |G|`` and the chord; the binned peak
    with no spread equals it."""
    from xmodel.pattern import binned_peak, shell_sum

    rng = np.random.default_rng(4)
    G = np.array([0.05, 0.06, 0.01])
    g = float(np.linalg.norm(G))
    sigma = 3e-3
    q = G[None, :] + rng.normal(scale=2 * sigma, size=(400, 3))
    q2 = np.sum(q * q, axis=1)
    ball = shell_sum(jnp.asarray(q.T), jnp.asarray(q2), jnp.asarray(G[None]), g, sigma, sigma, size_var=sigma ** 2)
    np.testing.assert_allclose(np.asarray(ball), np.exp(-0.5 * np.sum((q - G) ** 2, axis=1) / sigma ** 2),
                               rtol=1e-10, atol=1e-14)
    cap = shell_sum(jnp.asarray(q.T), jnp.asarray(q2), jnp.asarray(G[None]), g, sigma, sigma)
    qa = np.sqrt(q2)
    chord2 = g * g * np.sum((q / qa[:, None] - G / g) ** 2, axis=1)
    np.testing.assert_allclose(np.asarray(cap), np.exp(-0.5 * ((qa - g) ** 2 + chord2) / sigma ** 2), rtol=1e-10)
    # size and mosaic: the tangential variance sigma_s^2 g / |q| + (g sigma_m)^2
    mosaic = np.radians(1.0)
    st = np.sqrt(sigma ** 2 + (g * mosaic) ** 2)
    both = shell_sum(jnp.asarray(q.T), jnp.asarray(q2), jnp.asarray(G[None]), g, sigma, st, size_var=sigma ** 2)
    expected = np.exp(-0.5 * ((qa - g) ** 2 / sigma ** 2 + chord2 / (sigma ** 2 * g / qa + (g * mosaic) ** 2)))
    np.testing.assert_allclose(np.asarray(both), expected, rtol=1e-10)
    c = (q @ G) / g
    binned = binned_peak(jnp.asarray(qa), jnp.asarray(c[None]), jnp.asarray(np.zeros((1, qa.size))),
                         jnp.zeros((4, qa.size)), g, sigma, st, size_var=sigma ** 2)
    on_plane = np.exp(-0.5 * ((qa - g) ** 2 / sigma ** 2 + chord2 / (sigma ** 2 * g / qa + (g * mosaic) ** 2)))
    np.testing.assert_allclose(np.asarray(binned)[0], on_plane, rtol=1e-9)
