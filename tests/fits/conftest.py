"""Shared fixtures of the fit tests."""
import jax.numpy as jnp
import numpy as np
import pytest

from xmodel.config import default_paths, load_config
from xmodel.experiment import Experiment
from xmodel.parameters import Structure, params_from_config
from xmodel.pattern import PatternModel


@pytest.fixture(scope="session")
def yellow_polar_model():
    """The yellow domain's float64 model on a 40 chi x 70 q polar grid through the SL 111-311 and
    the AL 111/200 bands (8x binned detector), 3 deg SL mosaic: ``(model, pixels, params)``.
    test_batch.py and test_pattern_fit.py share it, and so its compiled programs."""
    cfg = load_config(default_paths("yellow"))
    ex = Experiment.from_config(cfg, binning=8)
    a0 = cfg.superlattice.lattice_constant
    a_range = (0.9 * a0, 1.1 * a0)
    st = Structure.build(lattice_constant=a0, q_max_sl=0.16, q_max_al=2.3, lattice_constant_range=a_range)
    p = params_from_config(cfg, dtype=jnp.float64).replace(sl_mosaic=np.radians(3.0))
    q = np.concatenate([np.linspace(0.065, 0.155, 45), np.linspace(1.75, 2.2, 25)])
    px = ex.polar_pixels(q, np.linspace(-120, 30, 40))
    model = PatternModel(px, st, p, dtype=jnp.float64, orientation_margin_deg=None,
                         lattice_constant_range=a_range, width_factor=1.5)
    return model, px, p
