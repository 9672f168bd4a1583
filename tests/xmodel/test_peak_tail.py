"""The SL peaks' profile across the Ewald sphere (``model.sl_peak_tail``,
`xmodel.pattern.across_sphere_profile`): a pseudo-Voigt whose integral is `sl_tail_integral`, a
model that equals the dense reference (with the members the tail keeps), differentiable, averaged
over a bin's pixels, followed by the reflection table, and 0 leaves the Gaussian model as it is."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from tests.xmodel.test_pattern import (
    _bin_pixels,
    _check_gradients,
    _fd_params,
    _small_pixels,
)
from xmodel.config import default_paths, load_config
from xmodel.experiment import Experiment
from xmodel.parameters import Structure, params_from_config, structure_from_config
from xmodel.pattern import (
    TAIL_HWHM,
    PatternModel,
    across_sphere_profile,
    bin_frame,
    binned_shell_sum,
    dense_pattern,
    shell_sum,
    sl_peak_widths,
    sl_tail_integral,
    tail_reach,
)
from xmodel.peaks import reflection_table
from xmodel.pixels import PixelSet

TAIL = 0.6


def _setup(dtype=jnp.float32, tail=TAIL):
    cfg = load_config(default_paths("yellow"), [f"model.sl_peak_tail={tail}"])
    ex = Experiment.from_config(cfg, binning=8)
    return ex, structure_from_config(cfg), params_from_config(cfg, dtype=dtype)


def test_profile_is_a_pseudo_voigt_and_its_integral():
    """Unit height, half maximum at the Gaussian's HWHM for every eta, the Lorentzian's u^-1 tail,
    and the integral over the offset relative to the Gaussian's is `sl_tail_integral`."""
    u = np.array([0.0, TAIL_HWHM ** 2, 400.0])
    for eta in (0.0, 0.3, 1.0):
        v = np.asarray(across_sphere_profile(u, eta))
        assert v[0] == pytest.approx(1.0) and v[1] == pytest.approx(0.5, rel=1e-12)
        assert v[2] == pytest.approx(eta * TAIL_HWHM ** 2 / (TAIL_HWHM ** 2 + 400.0) + (1 - eta) * np.exp(-200.0))
        num = integrate.quad(lambda t, e=eta: float(across_sphere_profile(t * t, e)), -np.inf, np.inf)[0]
        assert num / np.sqrt(2 * np.pi) == pytest.approx(sl_tail_integral(eta), rel=1e-8)
    np.testing.assert_array_equal(np.asarray(across_sphere_profile(u, 0.0)), np.exp(-0.5 * u))
    # "crystal" keeps the integrated intensity: the height falls by the integral
    h0 = sl_peak_widths(0.1, 1.5e-3, 0.01, "crystal")[2]
    assert sl_peak_widths(0.1, 1.5e-3, 0.01, "crystal", tail=0.5)[2] == pytest.approx(h0 / sl_tail_integral(0.5))
    assert sl_peak_widths(0.1, 1.5e-3, 0.01, "mosaic", tail=0.5)[2] == 1.0
    # the support's reach: the Lorentzian is at the Gaussian cut there
    r = tail_reach(0.5, 4.0)
    assert float(across_sphere_profile((4.0 * r) ** 2, 0.5)) == pytest.approx(np.exp(-8.0), rel=1e-6)
    assert tail_reach(0.0, 4.0) == 1.0


def test_config_reaches_the_structure_and_errors():
    cfg = load_config(default_paths("yellow"), ["model.sl_peak_tail=0.4"])
    assert structure_from_config(cfg).sl_peak_tail == 0.4
    assert structure_from_config(load_config(default_paths("yellow"))).sl_peak_tail == 0.0
    with pytest.raises(ValueError, match=r"sl_peak_tail = 1.5.*from 0 to 1 \(model.sl_peak_tail\)"):
        Structure.build(sl_peak_tail=1.5)
    with pytest.raises(Exception, match="sl_peak_tail"):
        load_config(default_paths("yellow"), ["model.sl_peak_tail=-0.1"])


def test_shell_sum_splits_the_chord_on_the_detector_plane():
    """A reflection lifted off the detector plane by ``delta`` along the beam: at the point of the
    plane under it the value is the profile at ``u = (delta / sigma_t)^2`` (the offset lies across
    the sphere); moved along chi instead, the Gaussian."""
    g, st = 0.08, 1.2e-3
    q = np.array([[g * np.sin(0.3), g * np.cos(0.3), 0.0]])
    for delta in (0.5 * st, 2.0 * st, 6.0 * st):
        gv = q[0] + np.array([0.0, 0.0, delta])
        gv *= g / np.linalg.norm(gv)
        d = np.linalg.norm(gv - q[0])
        got = float(shell_sum(jnp.asarray(q.T), jnp.asarray(np.sum(q * q, axis=1)), jnp.asarray(gv[None]), g,
                              1.5e-3, st, 0.5)[0])
        assert got == pytest.approx(float(across_sphere_profile((d / st) ** 2, 0.5)), rel=1e-9)
    e1 = np.array([np.cos(0.3), -np.sin(0.3), 0.0])           # along chi at that point
    gv = g * (q[0] / g + 0.02 * e1)
    gv *= g / np.linalg.norm(gv)
    got = float(shell_sum(jnp.asarray(q.T), jnp.asarray(np.sum(q * q, axis=1)), jnp.asarray(gv[None]), g,
                          1.5e-3, st, 0.5)[0])
    ref = float(shell_sum(jnp.asarray(q.T), jnp.asarray(np.sum(q * q, axis=1)), jnp.asarray(gv[None]), g,
                          1.5e-3, st)[0])
    # the chord's second-order part along q_hat lies off e1 too: (0.02 / 2)^2 of the offset
    assert got == pytest.approx(ref, rel=1e-4) and ref < 0.9


def test_tail_model_equals_dense_with_pruned_support_and_its_gradients_float64():
    """Sparse model (orientation-pruned support: the tail keeps the members off the sphere) ==
    dense reference; point and bin-averaged models agree with central finite differences."""
    ex, st, params = _setup(jnp.float64)
    px = _small_pixels(ex)
    pruned = PatternModel(px, st, params, dtype=jnp.float64)
    assert pruned.layout.sl_tail == TAIL
    dense = dense_pattern(px, st, params, dtype=jnp.float64)
    sl = np.asarray(jax.jit(pruned.components(("sl_scale",)))(pruned.arrays, params))[0] * float(params.sl_scale)
    assert np.max(np.abs(np.asarray(pruned(params)) - dense)) < 1e-3 * sl.max()
    # the tail lights reflections the Gaussian model leaves dark
    gauss = dense_pattern(px, dataclasses.replace(st, sl_peak_tail=0.0), params, dtype=jnp.float64)
    assert np.max(np.abs(dense - gauss)) > 1e-2 * sl.max()
    check_point_and_binned_gradients(px, st, params, seed=5)


def check_point_and_binned_gradients(px, st, params, seed: int) -> None:
    """`_check_gradients` of the point model on ``px`` and of the same points as 1 % radial bins
    (seeds ``seed`` and ``seed + 1``), float64, unpruned support."""
    params = _fd_params(params)
    opts = {"dtype": jnp.float64, "orientation_margin_deg": None, "width_factor": 2.0}
    _check_gradients(PatternModel(px, st, params, **opts), params, seed=seed)
    u = px.q_lab / np.maximum(px.q_abs, 1e-12)[:, None]
    spread = (0.01 * px.q_abs[:, None, None]) ** 2 / 12 * u[:, :, None] * u[:, None, :]
    binned = PixelSet(px.q_lab, px.weight, px.valid, px.shape, "polar", spread)
    _check_gradients(PatternModel(binned, st, params, **opts), params, seed=seed + 1)


def test_binned_tail_peak_equals_the_mean_over_the_bins_pixels():
    """As `test_pattern.test_binned_peak_equals_the_mean_over_the_bins_pixels`, with the tail and
    the reflection lifted off the sphere by two tangential sigmas (the tail's regime)."""
    ex, _, params = _setup(jnp.float64)
    g = 2 * np.pi * np.sqrt(3.0) / float(params.lattice_constant)
    err = binned_tail_error(ex.geometry, g, float(params.sl_radial_width), g * np.radians(1.0), TAIL)
    assert err < 2e-3, err


def binned_tail_error(geo, g: float, sr: float, st: float, tail, sigma_a=None) -> float:
    """Largest difference between `binned_shell_sum` and the mean of `shell_sum` over the pixels of
    1 % x 1 deg bins about a reflection of modulus ``g`` at chi 30 deg, lifted off the sphere by
    0.5 and 2 tangential sigmas, with the given across-sphere profile (`shell_sum`'s ``tail``,
    ``sigma_a``)."""
    ss, bss = jax.jit(shell_sum), jax.jit(binned_shell_sum)
    errs = []
    for lift in (0.5, 2.0):
        g_vec = geo.q_lab_from_polar(np.array([g]), np.array([30.0])).reshape(3) + np.array([0.0, 0.0, lift * st])
        g_vec = (g / np.linalg.norm(g_vec)) * g_vec
        for dq in (-1.0, 0.0, 0.5):
            for dchi in (-1.0, -0.5, 0.0):
                q_lo = g + dq * 0.01 * g
                pts, cen = _bin_pixels(geo, q_lo, q_lo + 0.01 * g, 30.0 + dchi, 31.0 + dchi)
                truth = float(np.mean(ss(jnp.asarray(pts.T), jnp.asarray(np.sum(pts ** 2, axis=1)),
                                         jnp.asarray(g_vec[None]), g, sr, st, tail, sigma_a)))
                frame, local = bin_frame(cen[None], np.cov(pts.T, bias=True)[None])
                got = float(bss(jnp.asarray(cen[:, None]), jnp.asarray(np.sum(cen ** 2)[None]), jnp.asarray(frame),
                                jnp.asarray(local), jnp.asarray(g_vec[None]), g, sr, st, tail, sigma_a)[0])
                errs.append(abs(got - truth))
    return max(errs)


def test_reflection_table_follows_the_tail():
    """The table's SL heights are the model's SL intensity at the table's pixels with the tail."""
    assert_table_follows_the_model(*_setup())


def assert_table_follows_the_model(ex, st, params) -> None:
    """The reflection table's SL heights equal the dense model's SL intensity at its pixels."""
    params = params.replace(diffuse_scale=0.0, al_scale=0.0, background=0.0)
    rows = [r for r in reflection_table(ex, st, params, min_relative=0.05) if r["lattice"] == "SL"]
    assert rows
    px = PixelSet.from_pixels(ex.geometry, [r["row"] for r in rows], [r["col"] for r in rows],
                              polarization_factor=ex.polarization_factor)
    np.testing.assert_allclose(dense_pattern(px, st, params), [r["intensity"] for r in rows], rtol=1e-3)
