"""Tests of fits/scan/window.py: the SL peaks evaluated in windows of the polar grid equal the
orientation-free model, its Jacobian too, and grids that do not allow windows keep the base model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fits.scan.settings import FitSettings
from fits.scan.setup import fit_point_index, support_model
from fits.scan.window import WindowedModel, window_sizes, windowed_model
from xmodel import orientation
from xmodel.config import default_paths, load_config
from xmodel.experiment import Experiment
from xmodel.parameters import params_from_config, structure_from_config

CHI = np.arange(180) * 2.0 - 179.0
#: the SL shells 111 to 311 and the AL 111 ring: few shells, so that the model compiles fast
Q = np.concatenate([np.geomspace(0.06, 0.14, 45), np.geomspace(1.80, 1.88, 8)])


def red_window_models(dtype=None, overrides=()) -> dict:
    """The red domain's orientation-free model on the fit points of a 2 deg polar grid, windowed
    (``dtype``: of the template's leaves, as `params_from_config`; ``overrides``: ``--set`` values)."""
    cfg = load_config(default_paths("red"), list(overrides))
    sup = FitSettings().support
    template = params_from_config(cfg) if dtype is None else params_from_config(cfg, dtype=dtype)
    a0 = float(template.lattice_constant)
    a_range = (sup.a_range_rel[0] * a0, sup.a_range_rel[1] * a0)
    structure = structure_from_config(cfg, a_range)
    pixels = Experiment.from_config(cfg).polar_pixels(Q, CHI)
    index = fit_point_index(pixels, structure, template, a_range, sup.width_factor, None, sup.band_nsigma)
    base = support_model(pixels.subset(index), structure, template, a_range, sup.width_factor)
    win = windowed_model(base, index, CHI, Q, template, sup.width_factor, sup.sl_window_nsigma)
    return {"base": base, "win": win, "template": template, "a_range": a_range, "index": index, "sup": sup}


@pytest.fixture(scope="module")
def models():
    return red_window_models()


def _random_params(m, rng):
    """Sample parameters at a random SL orientation, tilt and lattice constant of the range."""
    quat = rng.normal(size=4)
    R = np.asarray(orientation.matrix_from_quaternion(quat / np.linalg.norm(quat)), np.float64)
    return m["template"].replace(base_orientation=R, inplane=float(rng.normal(0, 0.2)),
                                 tilt1=float(rng.normal(0, 0.2)), tilt2=float(rng.normal(0, 0.2)),
                                 lattice_constant=float(rng.uniform(*m["a_range"])), sl_scale=3000.0,
                                 diffuse_scale=45.0, al_scale=20.0, background=0.05)


def test_the_windows_are_used_and_much_smaller_than_the_bands(models):
    win, base = models["win"], models["base"]
    assert isinstance(win, WindowedModel)
    pairs = sum((2 * W + 1) * (2 * V + 1) * base.support.sl_shells[i].members.size
                for i, (_, W, V, _) in enumerate(win.windows.shells))
    dense = sum(s.points.size * s.members.size for s in base.support.sl_shells)
    assert pairs < dense / 4


def test_windowed_terms_and_model_equal_the_orientation_free_ones(models):
    """Every term, in the order asked for, and the model, at random orientations, tilts and a."""
    win, base = models["win"], models["base"]
    rng = np.random.default_rng(7)
    batch = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[_random_params(models, rng) for _ in range(6)])
    parts = ("background", "al_scale", "diffuse_scale", "sl_scale")

    def terms(model):
        return np.asarray(jax.jit(jax.vmap(model.components(parts), in_axes=(None, 0)))(model.arrays, batch))

    a, b = terms(base), terms(win)
    sl_max = a[:, 3].max(axis=1, keepdims=True)
    assert np.all(sl_max > 0)
    assert np.max(np.abs(b[:, 3] - a[:, 3]) / sl_max) < 1e-3
    np.testing.assert_allclose(b[:, :3], a[:, :3], rtol=1e-5, atol=1e-12)
    p = jax.tree_util.tree_map(lambda x: x[0], batch)
    np.testing.assert_allclose(np.asarray(win(p)), np.asarray(base(p)), rtol=0, atol=1e-3 * 3000.0 * sl_max[0, 0])


def test_windowed_jacobian_equals_the_orientation_free_one(models):
    win, base = models["win"], models["base"]
    p = _random_params(models, np.random.default_rng(3))

    def jac(model):
        def f(th):
            q = p.replace(inplane=th[0], tilt1=th[1], tilt2=th[2], lattice_constant=th[3])
            return model.evaluate(model.arrays, q)
        th = jnp.array([p.inplane, p.tilt1, p.tilt2, p.lattice_constant], dtype=jnp.asarray(p.inplane).dtype)
        return np.asarray(jax.jit(jax.jacfwd(f))(th))

    a, b = jac(base), jac(win)
    scale = np.abs(a).max(axis=0)
    assert np.all(scale > 0)
    assert np.max(np.abs(b - a) / scale) < 1e-3


def test_grids_without_regular_chi_rows_or_windows_keep_the_base_model(models):
    base, m = models["base"], models
    sup = m["sup"]
    assert windowed_model(base, m["index"], CHI, Q, m["template"], sup.width_factor, 0.0) is base
    uneven = CHI.copy()
    uneven[5] += 0.3
    assert windowed_model(base, m["index"], uneven, Q, m["template"], sup.width_factor, 4.0) is base
    # a mosaic so wide that a window would span the ring
    assert window_sizes(Q, np.array([0.1]), np.array([10]), 0.01, 1.0, 2.0, 0.6, 0.0, 4.0) is None
    rows, cols = window_sizes(Q, np.array([0.1]), np.array([10]), 0.01, 1.0, 2.0, 0.02, 0.0, 4.0)
    assert 3 <= rows < 90 and cols >= 1


def test_windowed_bin_averaged_peaks_equal_the_orientation_free_ones(models):
    """Points that are reduced bins (a q spread): the windows widen and give the base model's
    bin-averaged peaks (`xmodel.pattern.binned_peak`)."""
    import dataclasses

    sup, m = models["sup"], models
    pixels = models["base"].pixels
    q_lab = np.asarray(pixels.q_lab, np.float64)
    qa = np.linalg.norm(q_lab, axis=1)
    u = q_lab / qa[:, None]
    e1 = np.cross([0.0, 0.0, 1.0], u)
    e1 /= np.linalg.norm(e1, axis=1)[:, None]
    # a uniform bin: 1 % of |q| wide radially, the 2 deg chi row tangentially (variance width^2 / 12)
    spread = ((0.01 * qa) ** 2 / 12.0)[:, None, None] * np.einsum("ni,nj->nij", u, u) \
        + ((qa * np.radians(2.0)) ** 2 / 12.0)[:, None, None] * np.einsum("ni,nj->nij", e1, e1)
    binned = dataclasses.replace(pixels, spread=spread)
    cfg = load_config(default_paths("red"))
    structure = structure_from_config(cfg, m["a_range"])
    base = support_model(binned, structure, m["template"], m["a_range"], sup.width_factor)
    win = windowed_model(base, m["index"], CHI, Q, m["template"], sup.width_factor, sup.sl_window_nsigma)
    assert isinstance(win, WindowedModel) and "win_spread" in win.arrays
    assert base.layout.binned
    a, peak = _sl_terms_agree(m, base, win, seed=11)
    # and the bin average differs from the peaks at the centroids by more than that
    plain = _sl_terms(models["base"], _random_batch(m, seed=11))
    assert np.max(np.abs(plain - a) / peak) > 1e-2


def _random_batch(m, seed):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[_random_params(m, rng) for _ in range(4)])


def _sl_terms(model, batch):
    return np.asarray(jax.jit(jax.vmap(model.components(("sl_scale",)), in_axes=(None, 0)))(model.arrays, batch))[:, 0]


def _sl_terms_agree(m, base, win, seed):
    """The SL terms of the windowed and the orientation-free model at 4 random parameter sets
    agree within 1e-3 of the brightest peak; returns the base terms and their maxima."""
    batch = _random_batch(m, seed)
    a, b = _sl_terms(base, batch), _sl_terms(win, batch)
    peak = a.max(axis=1, keepdims=True)
    assert np.all(peak > 0)
    assert np.max(np.abs(b - a) / peak) < 1e-3
    return a, peak


def test_windowed_crystal_peaks_equal_the_orientation_free_ones(models):
    """The "crystal" peak shape with a paracrystal term (`xmodel.pattern.sl_peak_widths`): wider
    tangential peaks at low |G|, wider radial ones at high |G|, and the windows follow them."""
    import dataclasses

    sup, m = models["sup"], models
    structure = dataclasses.replace(models["base"].structure, sl_peak_shape="crystal", sl_paracrystal=0.06)
    base = support_model(models["base"].pixels, structure, m["template"], m["a_range"], sup.width_factor)
    win = windowed_model(base, m["index"], CHI, Q, m["template"], sup.width_factor, sup.sl_window_nsigma)
    assert isinstance(win, WindowedModel)
    # the size term widens the windows of the low shells beyond the "mosaic" shape's
    mosaic = dataclasses.replace(structure, sl_peak_shape="mosaic", sl_paracrystal=0.0)
    narrow = windowed_model(support_model(models["base"].pixels, mosaic, m["template"], m["a_range"], sup.width_factor),
                            m["index"], CHI, Q, m["template"], sup.width_factor, sup.sl_window_nsigma)
    assert win.windows.shells[0][1] > narrow.windows.shells[0][1]
    _sl_terms_agree(m, base, win, seed=5)


def test_windowed_tail_peaks_equal_the_orientation_free_ones(models):
    """A tail across the Ewald sphere (`xmodel.pattern.across_sphere_profile`) lies off the
    detector plane: the windows stay the Gaussian's, and the windowed model equals the base one
    within 1e-3 of the brightest reflection of the random frames (a reflection tens of sigmas off
    the sphere keeps a Lorentzian tail beyond its window's chi cut, which holds ``cos(elevation)``
    of the cut: 2e-5 to 7e-5 where that reflection is 0.06 to 0.08)."""
    import dataclasses

    sup, m = models["sup"], models
    structure = dataclasses.replace(models["base"].structure, sl_peak_tail=0.8)
    base = support_model(models["base"].pixels, structure, m["template"], m["a_range"], sup.width_factor)
    win = windowed_model(base, m["index"], CHI, Q, m["template"], sup.width_factor, sup.sl_window_nsigma)
    assert isinstance(win, WindowedModel) and win.windows.shells == models["win"].windows.shells
    batch = _random_batch(m, 7)
    tailed, windowed = _sl_terms(base, batch), _sl_terms(win, batch)
    assert np.max(np.abs(windowed - tailed)) < 1e-3 * tailed.max()
    gauss = _sl_terms(models["base"], batch)
    assert np.max(np.abs(tailed - gauss)) > 1e-2 * gauss.max()
