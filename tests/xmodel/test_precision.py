"""Every JAX matrix product of the model, its orientations and its fits asks for full precision.

On GPUs since Ampere a float32 product at JAX's default precision is TensorFloat-32 (10-bit
mantissa): rotation matrices lose their unit rows and the peaks their shape (xmodel/precision.py).
CPUs compute full float32 whatever the precision asked, so the check is on the programs: no
``dot_general`` in their jaxprs is left at the default precision.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fits.batch import _normal_equations
from fits.objective import null_deviance
from fits.scan.window import WindowedModel
from tests.fits.scan.test_window import red_window_models
from xmodel import orientation
from xmodel.precision import EXACT
from xmodel.synth import frame_and_sl_peaks


def _dot_precisions(jaxpr) -> list:
    """The ``precision`` parameter of every ``dot_general`` in a (closed) jaxpr, sub-jaxprs included."""
    found = []
    for eqn in jaxpr.jaxpr.eqns if hasattr(jaxpr, "jaxpr") else jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn.params["precision"])
        for sub in _sub_jaxprs(eqn.params):
            found.extend(_dot_precisions(sub))
    return found


def _sub_jaxprs(params):
    """The jaxprs an equation holds (``pjit``'s, ``while``'s bodies, ``cond``'s branches, ...)."""
    for v in params.values():
        for item in (v if isinstance(v, (tuple, list)) else (v,)):
            if hasattr(item, "eqns") or hasattr(item, "jaxpr"):
                yield item


def _assert_exact(fn, *args, at_least: int = 1):
    precisions = _dot_precisions(jax.make_jaxpr(fn)(*args))
    assert len(precisions) >= at_least
    loose = [p for p in precisions if p is None or any(q != EXACT for q in (p if isinstance(p, tuple) else (p,)))]
    assert not loose, f"{len(loose)} of {len(precisions)} matrix products at precision {loose[:3]}"


@pytest.fixture(scope="module")
def models():
    """The red domain's windowed scan-fit model and its orientation-free base, float32."""
    m = red_window_models(jnp.float32)
    assert isinstance(m["win"], WindowedModel)
    return m["base"], m["win"], m["template"]


def test_orientations_are_exact():
    R = np.asarray(orientation.base_orientation([1, 1, 0]), np.float32)
    _assert_exact(lambda a, b, c: orientation.sl_orientation(R, a, b, c), 0.1, 0.2, 0.3, at_least=3)
    _assert_exact(lambda w: orientation.rotation_matrix(w), jnp.array([0.1, 0.2, 0.3], jnp.float32))


def test_model_gradient_and_jacobian_are_exact(models):
    base, _, template = models
    _assert_exact(base, template, at_least=4)                       # SL, AL reciprocal vectors and rotations
    _assert_exact(base.value_and_grad(lambda m, p: jnp.sum(m)), template)
    _assert_exact(lambda p: base.components()(base.arrays, p), template)
    _assert_exact(lambda p: frame_and_sl_peaks(base)(base.arrays, p), template)


def test_windowed_model_is_exact(models):
    _, win, template = models
    _assert_exact(win, template, at_least=4)
    _assert_exact(lambda p: win.components()(win.arrays, p), template)


def test_fit_algebra_is_exact():
    def split(x_nl, x_lin):
        return jnp.concatenate([jnp.sin(x_nl), 2.0 * x_lin, x_nl * x_lin[0]])

    _assert_exact(lambda x: _normal_equations(split, x, np.array([0, 1]), np.array([2])),
                  jnp.array([0.1, 0.2, 0.3], jnp.float32), at_least=2)
    shape = jnp.ones((5,), jnp.float32)
    _assert_exact(lambda o: null_deviance(shape, jnp.linspace(0.1, 1, 5, dtype=jnp.float32), o, shape),
                  jnp.arange(5, dtype=jnp.float32))
