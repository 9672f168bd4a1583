"""Tests of fits/domain_fit.py, certified-fit style: forward-model patterns of one domain with
known parameters, a start 2.5 % off in a, 30 % off in disorder and 1 deg off in orientation (about
a different axis per pattern), fitted at two exposures; the fit must end ok and recover the
shared a and disorder within 4 standard errors, the standard errors shrinking as 1/sqrt(exposure).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from fits.domain_fit import LOCAL, SHARED, fit_domain, fit_domain_average, parameter_bounds
from fits.parameters import spec
from fits.scan.settings import FitSettings
from fits.scan.setup import FitSetup
from fits.status import FitStatus
from xmodel.config import default_paths, load_config
from xmodel.noise import poisson_counts
from xmodel.parameters import FWHM_PER_SIGMA, params_from_config

CHI = np.arange(180) * 2.0 - 179.0
Q = np.concatenate([np.geomspace(0.06, 0.24, 80), np.geomspace(1.72, 2.3, 24)])
#: exposures (pixels per bin): the Poisson noise of the mean counts falls as 1/sqrt(exposure)
EXPOSURES = (1.0, 10.0)
#: lab axes of the 1 deg starting error of each pattern
START_AXES = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Rotation angle of R_a^T R_b (no symmetry: the fit starts next to the truth)."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R_a.T @ R_b) - 1) / 2, -1.0, 1.0))))


@pytest.fixture(scope="module")
def domain():
    cfg = load_config(default_paths("purple"))
    setup = FitSetup.build(cfg, Q, CHI, None, FitSettings())
    p = params_from_config(cfg).replace(sl_scale=3000.0, al_scale=40.0, background=0.05)
    true = [p.replace(inplane=p.inplane + np.radians(d), tilt1=np.radians(0.3 * d), sl_scale=3000.0 * (1 + 0.2 * k))
            for k, d in enumerate((-1.0, 0.0, 1.5))]
    R_true = [np.asarray(t.sl_orientation(), np.float64) for t in true]
    mu = np.stack([np.asarray(setup.model(t), np.float64) for t in true])
    start = [t.replace(base_orientation=jnp.asarray(Rotation.from_rotvec(np.radians(1.0) * np.asarray(ax)).as_matrix()
                                                    @ R, jnp.float32),
                       inplane=0.0, tilt1=0.0, tilt2=0.0, lattice_constant=float(p.lattice_constant) * 1.025,
                       disorder=float(p.disorder) * 1.3)
             for t, R, ax in zip(true, R_true, START_AXES)]
    init = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *start)
    return dict(setup=setup, p=p, true=true, R_true=R_true, mu=mu, init=init, start=start)


def _observe(mu: np.ndarray, exposure: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean counts per bin over ``exposure`` pixels, and the weight (pixels per bin)."""
    obs = np.stack([poisson_counts(m * exposure, seed=k) for k, m in enumerate(mu)]).astype(np.float64) / exposure
    return obs, np.full_like(obs, exposure)


@pytest.fixture(scope="module")
def fits_by_exposure(domain):
    out = {}
    for e in EXPOSURES:
        obs, w = _observe(domain["mu"], e)
        out[e] = fit_domain(obs, w, domain["setup"].model, domain["init"], max_iter=40)
    return out


@pytest.mark.parametrize("exposure", EXPOSURES)
def test_domain_fit_recovers_shared_a_and_disorder(domain, fits_by_exposure, exposure):
    r = fits_by_exposure[exposure]
    a_true = float(domain["p"].lattice_constant)
    d_true = float(np.degrees(domain["p"].disorder)) * FWHM_PER_SIGMA
    assert r.status is FitStatus.OK and r.converged, (r.status, r.n_iter)
    assert np.isfinite(r.lattice_constant_stderr) and r.lattice_constant_stderr < 0.05
    assert abs(r.lattice_constant - a_true) < 4 * r.lattice_constant_stderr, (r.lattice_constant, a_true)
    assert np.isfinite(r.disorder_deg_stderr) and r.disorder_deg_stderr < 1.0
    assert abs(r.disorder_deg - d_true) < 4 * r.disorder_deg_stderr, (r.disorder_deg, d_true)
    # each pattern started 1 deg off about lab e1, e2, e3: the offsets (inplane, tilt1, tilt2) that
    # undo it are exactly -1 deg on tilt1, tilt2, inplane respectively
    want = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])
    assert np.all(np.isfinite(r.offsets_stderr_deg)) and np.all(r.offsets_stderr_deg < 0.1)
    assert np.all(np.abs(r.offsets_deg - want) < 4 * r.offsets_stderr_deg), (r.offsets_deg, r.offsets_stderr_deg)
    mis = [_angle_deg(F, R) for F, R in zip(r.orientation_matrix, domain["R_true"])]
    assert max(mis) < 4 * float(np.max(r.offsets_stderr_deg)) * np.sqrt(3), mis
    np.testing.assert_allclose(r.scales[:, 0], [float(t.sl_scale) for t in domain["true"]], rtol=0.02)


def test_standard_errors_scale_with_exposure(fits_by_exposure):
    lo, hi = fits_by_exposure[EXPOSURES[0]], fits_by_exposure[EXPOSURES[1]]
    ratio = np.sqrt(EXPOSURES[1] / EXPOSURES[0])
    assert lo.lattice_constant_stderr / hi.lattice_constant_stderr == pytest.approx(ratio, rel=0.1)
    assert lo.disorder_deg_stderr / hi.disorder_deg_stderr == pytest.approx(ratio, rel=0.1)


def test_domain_fit_refuses_bad_shapes_and_bounds(domain):
    obs, w = _observe(domain["mu"], 1.0)
    model, init = domain["setup"].model, domain["init"]
    with pytest.raises(ValueError, match="must both be"):
        fit_domain(obs[:, :10], w[:, :10], model, init)
    with pytest.raises(ValueError, match="stack one ModelParams per pattern"):
        fit_domain(obs, w, model, domain["start"][0])
    with pytest.raises(ValueError, match="which this fit does not vary"):
        fit_domain(obs, w, model, init, bounds={"radius": (30.0, 40.0)})
    with pytest.raises(ValueError, match="needs min < max"):
        fit_domain(obs, w, model, init, bounds={"lattice_constant": (160.0, 140.0)})
    with pytest.raises(KeyError, match="unknown fit parameter 'lattice'"):
        fit_domain(obs, w, model, init, bounds={"lattice": (140.0, 160.0)})


def test_bounds_come_from_the_parameter_table():
    b = parameter_bounds(SHARED + LOCAL)
    for name in SHARED + LOCAL:
        assert b[name] == (spec(name).min, spec(name).max)
    assert parameter_bounds(SHARED, {"lattice_constant": (140, 160)})["lattice_constant"] == (140.0, 160.0)
    with pytest.raises(ValueError, match="is not a \\(min, max\\) pair"):
        parameter_bounds(SHARED, {"disorder_deg": 3.0})


def test_domain_average_fit(domain):
    """The mean pattern (orientations blurred over +-1.5 deg) from the middle pattern's start."""
    obs, w = _observe(domain["mu"], 1.0)
    a_true = float(domain["p"].lattice_constant)
    first = domain["start"][1]
    f = fit_domain_average(obs, w, domain["setup"].model, first, max_iter=50)
    assert f.status[0] is FitStatus.OK, f.messages
    assert abs(f.values["lattice_constant"][0] / a_true - 1) < 0.001
    # bounds reach fit_batch: a held inside [1.01 a, 1.04 a] ends on the lower bound
    g = fit_domain_average(obs, w, domain["setup"].model, first, max_iter=50,
                           bounds={"lattice_constant": (1.01 * a_true, 1.04 * a_true)})
    assert g.status[0] is FitStatus.AT_BOUND, g.messages
    assert g.values["lattice_constant"][0] == pytest.approx(1.01 * a_true, rel=1e-9)
