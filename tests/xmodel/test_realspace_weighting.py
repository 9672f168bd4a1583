"""Which size weighting the Bragg peaks of a polydisperse crystal follow: |<F>|^2 (decoupling
approximation) or <|F|^2> (the size-averaged form factor). The real-space simulator decides,
and the model's model.sl_peak_weighting choices are checked against it."""
import jax
import numpy as np
import pytest

from xmodel.form_factor import sphere_bragg_factor, sphere_form_factor
from xmodel.parameters import Structure
from xmodel.realspace.particles import fcc_grain, random_rotations
from xmodel.realspace.saxs import grain_intensity

A_SL, RADIUS, SIGMA = 150.0, 34.0, 2.5


@pytest.fixture(scope="module")
def cluster():
    rot = random_rotations(np.random.default_rng(7), 1, 0.7)[0]
    grain = fcc_grain(np.random.default_rng(8), lattice_constant=A_SL, diameter=1500.0, orientation=rot,
                      radius=RADIUS, radius_sigma=SIGMA, displacement=0.0, radius_step=0.05)
    return grain


def test_bragg_peaks_of_a_polydisperse_crystal_follow_the_decoupling_weighting(cluster):
    # At q = G every site is in phase: the peak is |sum_j F_j(G)|^2 = N^2 |<F(G)>|^2. Its shell-to-shell
    # ratios follow B = |<V Phi>|^2 / <V>^2, not P = <V^2 Phi^2> / <V^2> (-21 % at 220 for 34 +- 2.5 A).
    g = {hkl: (2 * np.pi / A_SL) * np.array(hkl, float) @ cluster.orientation.T
         for hkl in ((1, 1, 1), (2, 0, 0), (2, 2, 0))}
    heights = {hkl: grain_intensity(v[None], cluster, RADIUS)[0] for hkl, v in g.items()}
    qs = np.array([np.linalg.norm(v) for v in g.values()])
    b = np.asarray(sphere_bragg_factor(qs, RADIUS, SIGMA), float)
    p = np.asarray(sphere_form_factor(qs, RADIUS, SIGMA), float)
    real = np.array(list(heights.values()))
    real_ratio = real[[0, 2]] / real[1]
    np.testing.assert_allclose(real_ratio, b[[0, 2]] / b[1], rtol=0.04)          # decoupling
    assert abs(real_ratio[1] / (p[2] / p[1]) - 1) > 0.15                           # not the average


def test_structure_rejects_an_unknown_weighting():
    with pytest.raises(ValueError,
                       match=r"sl_peak_weighting 'mean' is unknown; use one of \['decoupling', 'average'\]"):
        Structure.build(sl_peak_weighting="mean")


def test_model_sl_peaks_follow_the_configured_weighting():
    from xmodel.config import default_paths, load_config
    from xmodel.experiment import Experiment
    from xmodel.parameters import params_from_config
    from xmodel.pattern import PatternModel

    cfg = load_config(default_paths("purple"))
    pixels = Experiment.from_config(cfg).polar_pixels(np.linspace(0.06, 0.2, 120), np.arange(-180.0, 180.0, 2.0))
    params = params_from_config(cfg)
    terms = {}
    for weighting in ("average", "decoupling"):
        structure = Structure.build(lattice_constant=float(params.lattice_constant), sl_peak_weighting=weighting)
        model = PatternModel(pixels, structure, params)
        terms[weighting] = np.asarray(jax.jit(model.components(("sl_scale",)))(model.arrays, params)[0], float)
    qabs = np.linalg.norm(pixels.q_lab, axis=1)
    on = terms["average"] > 1e-3 * terms["average"].max()
    assert on.sum() > 50
    cut = structure.form_factor_nsigma                   # the model's truncation of the radius average
    expected = (np.asarray(sphere_bragg_factor(qabs[on], RADIUS, SIGMA, n_sigma=cut), float)
                / np.asarray(sphere_form_factor(qabs[on], RADIUS, SIGMA, n_sigma=cut), float))
    np.testing.assert_allclose(terms["decoupling"][on] / terms["average"][on], expected, rtol=2e-3)
