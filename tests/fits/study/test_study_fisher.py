"""Fisher information and Cramer-Rao bounds: finite differences, exposure, identifiability."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from fits.parameters import pack, unpack
from fits.study.fisher import analyse_fisher, fisher_matrix
from fits.study.grid import StudyGrid, build_grid
from fits.study.problem import StudyProblem
from xmodel.config import load_config
from xmodel.parameters import structure_from_config
from xmodel.pattern import PatternModel

from xmodel.config import default_paths

YELLOW = [str(p) for p in default_paths("yellow")]
SMALL = ["detector.binning=16"]
NAMES = ("lattice_constant", "tilt1_deg", "disorder_deg", "al_scale")   # as the small_problem fixture

STEPS = {"lattice_constant": 1e-3, "tilt1_deg": 1e-3, "disorder_deg": 1e-3, "al_scale": 1e-3}


def test_conditional_bound_matches_central_difference_fisher(small_problem):
    """1/sqrt(F_ii) from jacfwd equals that of a Fisher matrix built from two simulated images
    per parameter, (I(theta + h) - I(theta - h)) / 2h, in float64."""
    p = small_problem
    fa = p.fisher()
    m = p.expected()
    x0 = np.asarray(pack(p.truth, p.names), np.float64)
    for i, name in enumerate(p.names):
        h = np.zeros_like(x0)
        h[i] = STEPS[name]
        plus = np.asarray(p.model(unpack(jnp.asarray(x0 + h), p.names, p.truth)), np.float64)
        minus = np.asarray(p.model(unpack(jnp.asarray(x0 - h), p.names, p.truth)), np.float64)
        d = (plus - minus) / (2 * STEPS[name])
        f_ii = fisher_matrix(m, d[:, None], p.grid.weight)[0, 0]
        assert fa.crlb_conditional[i] == pytest.approx(1 / np.sqrt(f_ii), rel=1e-5), name
    assert np.all(fa.crlb >= fa.crlb_conditional * (1 - 1e-12))
    assert np.all(np.isfinite(fa.crlb)) and fa.unidentifiable == ()


def test_analysis_of_a_known_matrix():
    """Marginal bounds are sqrt(diag(F^-1)), conditional 1/sqrt(F_ii); correlation of F^-1."""
    f = np.array([[4.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
    fa = analyse_fisher(f, ("lattice_constant", "tilt1_deg", "tilt2_deg"))
    cov = np.linalg.inv(f)
    np.testing.assert_allclose(fa.crlb, np.sqrt(np.diag(cov)), rtol=1e-12)
    np.testing.assert_allclose(fa.crlb_conditional, 1 / np.sqrt(np.diag(f)), rtol=1e-12)
    s = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(fa.correlation, cov / s[:, None] / s[None, :], rtol=1e-10)
    d = 1 / np.sqrt(np.diag(f))
    lam = np.linalg.eigvalsh(f * d[:, None] * d[None, :])
    assert fa.condition_number == pytest.approx(lam.max() / lam.min())


def test_bounds_shrink_as_one_over_root_exposure(small_problem):
    """Counts scale with the exposure: F of a shape parameter grows linearly."""
    p4 = dataclasses.replace(small_problem, exposure_s=1.2,
                             truth=small_problem.truth.replace(
                                 al_scale=small_problem.truth.al_scale * 4, sl_scale=small_problem.truth.sl_scale * 4,
                                 diffuse_scale=small_problem.truth.diffuse_scale * 4,
                                 background=small_problem.truth.background * 4))
    a, b = small_problem.fisher(), p4.fisher()
    for i, n in enumerate(NAMES[:3]):
        assert b.crlb[i] == pytest.approx(a.crlb[i] / 2, rel=1e-6), n


def test_exposure_option_scales_the_counts():
    from fits.study.problem import at_exposure

    cfg = load_config(YELLOW, SMALL)
    from xmodel.parameters import params_from_config
    p = params_from_config(cfg)
    q = at_exposure(p, 2.5)
    assert float(q.sl_scale) == pytest.approx(2.5 * float(p.sl_scale))
    assert float(q.background) == pytest.approx(2.5 * float(p.background))
    assert float(q.lattice_constant) == float(p.lattice_constant)
    with pytest.raises(ValueError, match="exposure_s = -1 must be a positive number of seconds"):
        StudyProblem.from_config(cfg, ["tilt1_deg"], grid="binned", exposure_s=-1)


def test_a_parameter_without_effect_is_named():
    """Without AL peaks (al_scale = 0) the disorder does not change the pattern."""
    cfg = load_config(YELLOW, SMALL + ["atomic_lattice.peak_scale=0"])
    fa = StudyProblem.from_config(cfg, ["tilt1_deg", "disorder_deg"], grid="binned").fisher()
    assert fa.no_effect == ("disorder_deg",)
    assert np.isinf(fa.crlb[1]) and np.isinf(fa.crlb_conditional[1]) and np.isfinite(fa.crlb[0])
    assert len(fa.unidentifiable) == 1
    assert fa.unidentifiable[0].startswith("disorder_deg has no effect on the pattern on this grid")


def test_two_perfectly_correlated_scales_trade_off():
    """On one ring of constant |q| the diffuse term P(|q|) is a constant: diffuse_scale and the
    background change the pattern in exactly the same way."""
    cfg = load_config(YELLOW, SMALL)
    from xmodel.experiment import Experiment
    from xmodel.parameters import params_from_config

    exp = Experiment.from_config(cfg)
    q0 = 2 * np.pi * 2 / cfg.superlattice.lattice_constant          # the 200_SL ring: SL spots on it
    chi = np.linspace(-179.5, 179.5, 360)
    px = exp.polar_pixels(np.array([q0]), chi)
    truth = params_from_config(cfg, dtype=jnp.float64)
    grid = StudyGrid("polar", px, px.valid * 10.0, (360, 1), np.arange(360), np.array([q0]), chi, exp)
    model = PatternModel(px, structure_from_config(cfg), truth, dtype=jnp.float64)
    prob = StudyProblem(cfg, grid, 0.3, truth, model, ("diffuse_scale", "background", "sl_scale"))
    fa = prob.fisher()
    assert fa.no_effect == ()
    assert len(fa.unidentifiable) == 1
    msg = fa.unidentifiable[0]
    assert msg.startswith("diffuse_scale and background trade off")
    assert "is not determined at all" in msg or "times worse than if each were fitted alone" in msg
    assert abs(fa.correlation[0, 1]) > 0.999 and fa.condition_number > 1e8
    assert np.isfinite(fa.crlb[2]) and fa.crlb[2] < 10 * fa.crlb_conditional[2]     # the SL spots still tell


def test_bad_grid_is_refused():
    cfg = load_config(YELLOW, SMALL)
    with pytest.raises(ValueError, match="unknown grid 'polr'; valid grids are \\['full', 'binned', 'polar'\\]"):
        build_grid(cfg, "polr")
