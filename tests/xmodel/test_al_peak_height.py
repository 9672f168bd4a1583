"""The AL peaks' heights (``model.al_peak_intensity``, `xmodel.pattern.al_peak_height`): with
"integrated" every reflection's integral over reciprocal space follows |F|^2, as the real-space
simulator's finite PbS spheres with sampled orientations give; "height" keeps the heights equal."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from tests.xmodel.test_pattern import _small_pixels
from xmodel.config import default_paths, load_config
from xmodel.experiment import Experiment
from xmodel.parameters import Structure, params_from_config, structure_from_config
from xmodel.pattern import (
    PatternModel,
    al_peak_height,
    al_tangential_sigma,
    dense_pattern,
    shell_sum,
)
from xmodel.realspace.particles import random_rotations
from xmodel.realspace.waxs import WaxsPoints, nc_intensity, rock_salt_intensity

A_PBS = 5.936


def _integral(hkl, sigma_s: float, disorder: float, intensity: str) -> float:
    """3D integral (1/A^3) of one unit-|F|^2 AL reflection of the model, on a grid of +-6 sigma."""
    g_vec = (2 * np.pi / A_PBS) * np.asarray(hkl, float)
    g = float(np.linalg.norm(g_vec))
    st = float(al_tangential_sigma(g, sigma_s, disorder))
    # axes: radial (along G) and two tangential ones
    e0 = g_vec / g
    e1 = np.cross(e0, [0.0, 0.0, 1.0] if abs(e0[2]) < 0.9 else [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(e0, e1)
    n = 61
    r = np.linspace(-6 * sigma_s, 6 * sigma_s, n)
    t = np.linspace(-6 * st, 6 * st, n)
    rr, t1, t2 = np.meshgrid(r, t, t, indexing="ij")
    q = g_vec + rr.reshape(-1, 1) * e0 + t1.reshape(-1, 1) * e1 + t2.reshape(-1, 1) * e2
    vals = np.asarray(shell_sum(jnp.asarray(q.T), jnp.asarray(np.sum(q * q, axis=1)), jnp.asarray(g_vec[None]),
                                g, sigma_s, st), float)
    h = float(al_peak_height(g, sigma_s, disorder, A_PBS, intensity))
    return h * vals.sum() * (r[1] - r[0]) * (t[1] - t[0]) ** 2


@pytest.mark.parametrize("disorder_deg", [3.0, 8.0])
def test_integrated_keeps_each_reflections_integral(disorder_deg):
    """Per unit |F|^2 the 111, 220 and 311 reflections integrate to the 200 one's with "integrated"
    (the chord's curvature on the sphere of radius |G| leaves < 1 %); with "height" they scale as
    ``(sigma_t / sigma_t,200)^2``."""
    sigma_s, dis = 0.039, np.radians(disorder_deg) / 2.3548
    ref = _integral((2, 0, 0), sigma_s, dis, "integrated")
    st200 = float(al_tangential_sigma(4 * np.pi / A_PBS, sigma_s, dis))
    for hkl in ((1, 1, 1), (2, 2, 0), (3, 1, 1)):
        assert _integral(hkl, sigma_s, dis, "integrated") / ref == pytest.approx(1.0, abs=0.01)
        st = float(al_tangential_sigma(2 * np.pi / A_PBS * np.linalg.norm(hkl), sigma_s, dis))
        assert _integral(hkl, sigma_s, dis, "height") / ref == pytest.approx((st / st200) ** 2, rel=0.01)
    assert float(al_peak_height(4 * np.pi / A_PBS, sigma_s, dis, A_PBS)) == pytest.approx(1.0, rel=1e-12)


def test_real_space_ncs_follow_integrated():
    """The real-space simulator (no code shared with the model): 30,000 spheres of PbS, radius 34 A,
    orientations sampled with a Gaussian rotation vector of sigma 0.06 rad (dPhi = 8.1 deg), at the
    centre of the 111, 200 and 220 reflections. Per |F|^2 and relative to 200, the centre
    intensities are the model's ``h_G`` with "integrated" (within 4 %; 1.5 % seen, the sphere's
    shape transform is not Gaussian), and 26 % and 47 % off the "height" model's 1."""
    radius, sigma = 34.0, 0.06
    sigma_s = np.sqrt(2.5) / radius        # the sphere's shape transform as a Gaussian, exp(-q^2 R^2 / 5)
    rots = random_rotations(np.random.default_rng(1), 30000, sigma)
    centre = {}
    for hkl in ((1, 1, 1), (2, 0, 0), (2, 2, 0)):
        g = (2 * np.pi / A_PBS) * np.array(hkl, float)
        f2 = rock_salt_intensity(np.array([hkl]), A_PBS, 13.8)
        centre[hkl] = nc_intensity(WaxsPoints(g[None]), rots, np.full(len(rots), radius), np.array([hkl]), f2,
                                   A_PBS, cutoff=0.3)[0] / f2[0]
    for hkl, expected_height_off in (((1, 1, 1), 0.2), ((2, 2, 0), 0.4)):
        ratio = centre[hkl] / centre[(2, 0, 0)]
        h = float(al_peak_height(2 * np.pi / A_PBS * np.linalg.norm(hkl), sigma_s, sigma, A_PBS))
        assert ratio == pytest.approx(h, rel=0.04)
        assert abs(ratio - 1.0) > expected_height_off


def test_model_and_dense_follow_the_setting_and_errors():
    """The sparse model equals the dense reference under both settings (to the support's cut); the AL term differs between
    them; the config reaches the structure; unknown values are errors that name the key."""
    cfg = load_config(default_paths("yellow"))
    ex = Experiment.from_config(cfg, binning=8)
    st, params = structure_from_config(cfg), params_from_config(cfg, dtype=jnp.float64)
    assert st.al_peak_intensity == "integrated"
    px = _small_pixels(ex)
    al = {}
    for intensity in ("integrated", "height"):
        s = dataclasses.replace(st, al_peak_intensity=intensity)
        model = PatternModel(px, s, params, dtype=jnp.float64)
        assert model.layout.al_intensity == intensity
        dense = dense_pattern(px, s, params, dtype=jnp.float64)
        # the pruned support leaves out what is below its cut (as in tests/xmodel/test_pattern.py)
        assert np.max(np.abs(np.asarray(model(params)) - dense)) < 1e-3 * float(dense.max())
        al[intensity] = np.asarray(model.components(("al_scale",))(model.arrays, params))[0]
    assert al["height"].max() > 0 and not np.allclose(al["integrated"], al["height"], rtol=1e-3)
    assert structure_from_config(load_config(default_paths("yellow"), ["model.al_peak_intensity=height"])
                                 ).al_peak_intensity == "height"
    with pytest.raises(ValueError, match=r"al_peak_intensity 'peak' is unknown.*model.al_peak_intensity"):
        Structure.build(al_peak_intensity="peak")
    with pytest.raises(ValueError, match=r"al_peak_intensity 'peak' is unknown"):
        al_peak_height(2.0, 0.04, 0.05, A_PBS, "peak")
    with pytest.raises(Exception, match="al_peak_intensity"):
        load_config(default_paths("yellow"), ["model.al_peak_intensity=peak"])
