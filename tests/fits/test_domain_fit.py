"""Tests of fits/domain_fit.py: shared a and disorder of a domain's patterns recovered."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fits.domain_fit import fit_domain, fit_domain_average
from fits.scan_fit import FitSettings, FitSetup
from xmodel.config import default_paths, load_config
from xmodel.noise import poisson_counts
from xmodel.parameters import FWHM_PER_SIGMA, params_from_config

CHI = np.arange(180) * 2.0 - 179.0
Q = np.concatenate([np.geomspace(0.06, 0.24, 80), np.geomspace(1.72, 2.3, 24)])


@pytest.fixture(scope="module")
def domain():
    cfg = load_config(default_paths("purple"))
    setup = FitSetup.build(cfg, Q, CHI, None, FitSettings())
    p = params_from_config(cfg).replace(sl_scale=3000.0, al_scale=40.0, background=0.05)
    true = []
    for k, d in enumerate((-1.0, 0.0, 1.5)):
        true.append(p.replace(inplane=p.inplane + np.radians(d), tilt1=np.radians(0.3 * d),
                              sl_scale=3000.0 * (1 + 0.2 * k)))
    obs = np.stack([poisson_counts(np.asarray(setup.model(t), float), seed=k) for k, t in enumerate(true)]).astype(float)
    w = np.ones_like(obs)
    start = [t.replace(base_orientation=jnp.asarray(np.asarray(t.sl_orientation(), np.float32)), inplane=0.0,
                       tilt1=0.0, tilt2=0.0, lattice_constant=float(p.lattice_constant) * 1.004,
                       disorder=float(p.disorder) * 1.15) for t in true]
    init = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *start)
    return setup, p, obs, w, init


def test_domain_fit_recovers_shared_a_and_disorder(domain):
    setup, p, obs, w, init = domain
    r = fit_domain(obs, w, setup.model, init, max_iter=25)
    assert abs(r.lattice_constant / float(p.lattice_constant) - 1) < 0.002
    assert abs(r.disorder_deg - float(np.degrees(p.disorder)) * FWHM_PER_SIGMA) < 1.5
    assert np.all(np.abs(r.offsets_deg) < 0.5)
    with pytest.raises(ValueError, match="must both be"):
        fit_domain(obs[:, :10], w[:, :10], setup.model, init)


def test_domain_average_fit(domain):
    setup, p, obs, w, init = domain
    first = jax.tree_util.tree_map(lambda x: x[1], init)
    f = fit_domain_average(obs, w, setup.model, first, max_iter=30)
    assert abs(f.values["lattice_constant"][0] / float(p.lattice_constant) - 1) < 0.003
