"""Poisson-appropriate objectives of one pattern and their JAX Jacobians.

Data are either counts per pixel (``weight`` = 1 on valid pixels) or reduced polar images
holding the *mean* count of the ``n`` pixels of each (chi, q) bin (``weight`` = n, the
``/entry/reduction/counts`` dataset written by `xmodel.reduction`). The sum of a bin's counts
is Poisson with mean ``n m`` (``m`` the model's count per pixel at the bin centre), so every
objective below weights a point by ``n``. Points with ``weight <= 0`` or a non-finite
observation are left out (residual 0, gradient 0, never NaN).

* `poisson_deviance`: ``D = 2 sum w (m - d + d log(d / m))`` (the Poisson deviance,
  ``d log(d/m) = 0`` at ``d = 0``); minimising it is maximum likelihood.
* `deviance_residuals`: signed square roots of the per-point deviance (sum of squares = D), so
  Levenberg-Marquardt minimises D.
* `weighted_residuals`: Pearson ``(d - m) sqrt(w / max(m, floor))`` (variance of a bin mean
  ``m / w`` from the model, floored).
* A Gaussian prior on some parameters (`check_prior`): one more residual ``(x - mu) / sigma``
  per parameter, so the sum of squares is the objective plus ``-2 log`` of the prior density
  (up to a constant) and its minimum the maximum a posteriori estimate (a penalised
  likelihood; Gelman et al., Bayesian Data Analysis, 3rd ed. 2013, sec. 4.1: the normal
  approximation of the posterior about its mode has the inverse of ``J^T J`` with these rows
  as its covariance).

The model is floored at `MODEL_FLOOR` counts so that a model of exactly 0 on a valid point (a
zero background far from any peak) gives a large but finite deviance.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fits.parameters import check_names, unpack
from xmodel.parameters import ModelParams
from xmodel.pattern import PatternModel
from xmodel.precision import EXACT

#: smallest model value (counts per point) used in the objectives
MODEL_FLOOR = 1e-6

#: residual kinds accepted by `make_residual_fn`, `fits.pattern_fit`, `fits.batch`
KINDS = ("deviance", "weighted")

# Taylor coefficients of 2 h(1 + u) / u^2 with h(t) = 1 - t + t log t:
# 2 h / u^2 = sum_k 2 (-1)^k u^k / ((k + 1)(k + 2))
_SERIES = tuple(2.0 * (-1) ** k / ((k + 1) * (k + 2)) for k in range(10))
_SMALL_U = 0.1


def _valid(observed, weight):
    return (weight > 0) & jnp.isfinite(observed)


def _clean(model, observed, weight, floor):
    """Floored model, observation and weight with safe values (m=d=w=1) on excluded points."""
    ok = _valid(observed, weight)
    d = jnp.where(ok, observed, 1.0)
    w = jnp.where(ok, weight, 1.0)
    m = jnp.where(ok, jnp.maximum(model, floor), 1.0)
    return ok, m, d, w


def _xlogx(t):
    pos = t > 0
    return jnp.where(pos, t * jnp.log(jnp.where(pos, t, 1.0)), 0.0)


def pointwise_deviance(model, observed, weight, floor: float = MODEL_FLOOR):
    """Per-point Poisson deviance ``2 w (m - d + d log(d / m))`` (0 on excluded points).

    Parameters
    ----------
    model : (..., P) expected counts per pixel (counts).
    observed : (..., P) observed counts per pixel, or mean counts per pixel of each bin.
    weight : (..., P) pixels per point (1 for raw pixels, the bin's pixel count for reduced
        images); 0 where invalid.
    floor : smallest model value (counts).

    Notes
    -----
    Poisson deviance (McCullagh & Nelder, Generalized Linear Models, 2nd ed., 1989, §2.3;
    doi:10.1007/978-1-4899-3242-6) of the bin sum ``w d`` against mean ``w m``.
    Validation: equals ``2 (log L_saturated - log L)`` from scipy.stats.poisson (tests).
    """
    ok, m, d, w = _clean(model, observed, weight, floor)
    dev = 2.0 * w * (m - d + _xlogx(d) - jnp.where(d > 0, d * jnp.log(m), 0.0))
    return jnp.where(ok, dev, 0.0)


def poisson_deviance(model, observed, weight, floor: float = MODEL_FLOOR):
    """Poisson deviance ``D = 2 sum w (m - d + d log(d / m))`` over the valid points (scalar).

    See `pointwise_deviance` for the arguments; reduces over the last axis.
    """
    return jnp.sum(pointwise_deviance(model, observed, weight, floor), axis=-1)


def _signed_root(u):
    """``sign(u) sqrt(2 h(1 + u))``, smooth through u = 0 (series) and finite at u = -1."""
    small = jnp.abs(u) < _SMALL_U
    us = jnp.where(small, u, 0.0)
    poly = jnp.zeros_like(us)
    for c in reversed(_SERIES):
        poly = poly * us + c
    series = us * jnp.sqrt(poly)
    ul = jnp.where(small, 1.0, u)
    t = 1.0 + ul
    h = jnp.maximum(1.0 - t + _xlogx(t), 0.0)
    direct = jnp.sign(ul) * jnp.sqrt(jnp.where(small, 1.0, 2.0 * h))
    return jnp.where(small, series, direct)


def deviance_residuals(model, observed, weight, floor: float = MODEL_FLOOR):
    """Signed deviance residuals ``sign(d - m) sqrt(per-point deviance)``, shape (..., P).

    Their sum of squares is `poisson_deviance`, so least squares on them is maximum
    likelihood. Arguments as in `pointwise_deviance`.

    Notes
    -----
    Written as ``sqrt(w m) g(d / m - 1)`` with ``g(u) = sign(u) sqrt(2 h(1 + u))``,
    ``h(t) = 1 - t + t log t``; near ``d = m`` ``g`` is evaluated from its Taylor series
    (``g(u) = u sqrt(1 - u/3 + u^2/6 - ...)``), so the residual is smooth there and its
    gradient is never NaN, also at ``d = 0`` and on excluded points. Deviance residuals:
    McCullagh & Nelder (1989), §2.4.3, doi:10.1007/978-1-4899-3242-6.
    Validation: sum of squares equals `poisson_deviance`; jax gradients against finite
    differences at d = m, d = 0 and far from m (tests/fits/test_parameters.py).
    """
    ok, m, d, w = _clean(model, observed, weight, floor)
    r = jnp.sqrt(w * m) * _signed_root(d / m - 1.0)
    return jnp.where(ok, r, 0.0)


def weighted_residuals(model, observed, weight, floor: float = MODEL_FLOOR):
    """Pearson residuals ``(d - m) sqrt(w / max(m, floor))``, shape (..., P).

    The stated weight: the Poisson variance of a bin mean, ``m / w``, taken from the model
    (floored at ``floor`` counts). Arguments as in `pointwise_deviance`.

    Notes
    -----
    Pearson's chi-square with model variance (McCullagh & Nelder 1989, §2.4.2). Biased at
    a few counts per bin; prefer `deviance_residuals` there.
    """
    ok, m, d, w = _clean(model, observed, weight, floor)
    return jnp.where(ok, (d - m) * jnp.sqrt(w / m), 0.0)


def _residuals_of(kind: str):
    if kind == "deviance":
        return deviance_residuals
    if kind == "weighted":
        return weighted_residuals
    raise ValueError(f"unknown objective kind {kind!r}; valid kinds are {list(KINDS)} "
                     "(deviance: Poisson maximum likelihood; weighted: Pearson least squares)")


def intensity_function(model: PatternModel) -> tuple[Callable, dict]:
    """The model as a pure ``(arrays, params) -> (P,) intensities`` and its constant arrays.

    Passing the arrays as arguments keeps them out of compiled programs (see
    `PatternModel.compose`), and the function can be traced under jit, vmap and jacfwd.
    """
    return model.evaluate, model.arrays


#: a Gaussian prior as `check_prior` returns it: ``((name, mean, sigma), ...)`` in edge units
Prior = tuple[tuple[str, float, float], ...]


def check_prior(names: Sequence[str], prior: Mapping[str, tuple[float, float]] | Prior | None) -> Prior:
    """A Gaussian prior on some of the varying parameters, checked and in a hashable form.

    Parameters
    ----------
    names : the varying parameters (edge names of `fits.parameters.PARAMETER_TABLE`).
    prior : ``{name: (mean, sigma)}`` (or ``((name, mean, sigma), ...)``) in the parameters' edge
        units (deg, A, counts); ``None`` or empty: no prior (maximum likelihood).

    Returns
    -------
    ((name, mean, sigma), ...) in the order of ``names``: independent normal priors
    ``N(mean, sigma^2)``; each adds the residual ``(x - mean) / sigma`` (`prior_residuals`).

    Raises
    ------
    ValueError
        For a name that does not vary (a prior on a held parameter does nothing, so it is a
        mistake), or a mean or sigma that is not a finite number (sigma > 0).
    """
    if not prior:
        return ()
    items = prior.items() if isinstance(prior, Mapping) else ((p[0], tuple(p[1:])) for p in prior)
    out = {}
    for name, ms in items:
        if name not in names:
            raise ValueError(f"a prior on {name!r}, which does not vary (the varying parameters are "
                             f"{list(names)}); add it to vary or drop its prior")
        try:
            mean, sigma = (float(v) for v in ms)
        except (TypeError, ValueError):
            raise ValueError(f"the prior on {name!r} is {ms!r}; expected (mean, sigma), two numbers in the "
                             "parameter's edge units") from None
        if not (np.isfinite(mean) and np.isfinite(sigma) and sigma > 0):
            raise ValueError(f"the prior on {name!r} has mean {mean!r} and sigma {sigma!r}; expected a finite "
                             "mean and a finite sigma > 0 (no prior: leave the parameter out)")
        out[name] = (mean, sigma)
    return tuple((n, *out[n]) for n in names if n in out)


def prior_residuals(vector, names: Sequence[str], prior: Prior):
    """``(x - mean) / sigma`` for each parameter of ``prior`` (`check_prior`), taken from
    ``vector`` (edge units, in the order of ``names``); shape (len(prior),)."""
    if not prior:
        return jnp.zeros(0, jnp.asarray(vector).dtype)
    idx = np.array([list(names).index(n) for n, _, _ in prior])
    mean = np.array([m for _, m, _ in prior])
    sigma = np.array([s for _, _, s in prior])
    v = jnp.asarray(vector)
    return (v[idx] - mean.astype(v.dtype)) / sigma.astype(v.dtype)


def residual_function(model: PatternModel, names: Sequence[str], kind: str = "deviance",
                      prior: Prior = ()) -> Callable:
    """Pure ``(arrays, vector, template, observed, weight) -> (P + K,) residuals`` (not jitted).

    ``vector`` holds the named fit parameters in edge units (`fits.parameters`), ``template``
    every other field; for use inside larger jitted/vmapped programs (e.g. `fits.batch`). The
    last ``K = len(prior)`` residuals are those of the Gaussian prior (`check_prior`,
    `prior_residuals`); without one there are P.
    """
    names = check_names(names)
    prior = check_prior(names, prior)
    res = _residuals_of(kind)
    fn, _ = intensity_function(model)

    def residuals(arrays, vector, template, observed, weight):
        params = unpack(vector, names, template)
        m = fn(arrays, params)
        dtype = jnp.result_type(m.dtype, jnp.asarray(vector).dtype)
        r = res(m.astype(dtype), observed.astype(dtype), weight.astype(dtype))
        if not prior:
            return r
        return jnp.concatenate([r, prior_residuals(jnp.asarray(vector, dtype), names, prior)])

    return residuals


def split_residual_function(model: PatternModel, names: Sequence[str], kind: str = "deviance",
                            prior: Prior = ()) -> tuple[Callable, tuple[np.ndarray, np.ndarray]]:
    """Residuals with the fit parameters in a nonlinear and a linear-scale group.

    Returns ``(residuals, (nonlinear, linear))``: ``residuals(arrays, x_nonlinear, x_linear,
    template, observed, weight) -> (P,)`` equals `residual_function`'s at the vector ``x`` with
    ``x[nonlinear] = x_nonlinear`` and ``x[linear] = x_linear`` (index arrays into ``names``).
    The linear group holds the scales of `xmodel.pattern.TERMS` (the model is linear in them):
    differentiating with respect to one group while the other is a constant lets JAX skip the
    peak sums for the scale tangents (symbolic zeros), which makes a forward-mode Jacobian
    cheaper than one pass with every tangent. ``prior`` (`check_prior`) appends its residuals
    as `residual_function` does.
    """
    from xmodel.pattern import TERMS

    names = check_names(names)
    prior = check_prior(names, prior)
    res = _residuals_of(kind)
    fn, _ = intensity_function(model)
    linear = np.array([i for i, n in enumerate(names) if n in TERMS], int)
    nonlinear = np.array([i for i, n in enumerate(names) if n not in TERMS], int)
    names_nl = tuple(names[i] for i in nonlinear)
    names_lin = tuple(names[i] for i in linear)

    def residuals(arrays, x_nonlinear, x_linear, template, observed, weight):
        params = unpack(x_linear, names_lin, unpack(x_nonlinear, names_nl, template))
        m = fn(arrays, params)
        dtype = jnp.result_type(m.dtype, jnp.asarray(x_nonlinear).dtype, jnp.asarray(x_linear).dtype)
        r = res(m.astype(dtype), observed.astype(dtype), weight.astype(dtype))
        if not prior:
            return r
        x = jnp.zeros(len(names), dtype).at[nonlinear].set(jnp.asarray(x_nonlinear, dtype)) \
            .at[linear].set(jnp.asarray(x_linear, dtype))
        return jnp.concatenate([r, prior_residuals(x, names, prior)])

    return residuals, (nonlinear, linear)


def split_jacobian(split: Callable, x, nonlinear: np.ndarray, linear: np.ndarray):
    """``(J, r)``: the (P, n) Jacobian of the residuals at ``x`` and the residuals, from two
    forward-mode passes (traceable).

    ``split(x_nonlinear, x_linear)`` is the residual with the parameters in two groups
    (`split_residual_function`). The tangents of the nonlinear group (orientation, a, widths) go
    through the whole model; those of the linear scales (`xmodel.pattern.TERMS`) are taken with
    the nonlinear group held constant, so JAX's symbolic zero tangents skip every peak sum and
    they cost one product each. The columns are in the order of ``x``.
    """
    x_nl, x_lin = x[nonlinear], x[linear]
    cols = []
    r = None
    for v, fn in ((x_nl, lambda t: split(t, x_lin)), (x_lin, lambda t: split(x_nl, t))):
        if v.shape[0] == 0:
            continue
        r, jvp = jax.linearize(fn, v)
        cols.append(jax.vmap(jvp, out_axes=1)(jnp.eye(v.shape[0], dtype=v.dtype)))
    jac = jnp.concatenate(cols, axis=1)[:, np.argsort(np.concatenate([nonlinear, linear]))]
    return jac, r


_COMPILED: weakref.WeakKeyDictionary[PatternModel, dict] = weakref.WeakKeyDictionary()


def compiled(model: PatternModel, key: tuple, build: Callable):
    """``build(model, *key[1:])``, made once per model and ``key`` and kept while the model lives.

    Jitted functions are cached by identity, so a fit called many times on one model (a scan,
    a boundary line) must reuse the same jitted object to compile only once.
    """
    table = _COMPILED.setdefault(model, {})
    if key not in table:
        table[key] = build(model, *key[1:])
    return table[key]


def _build_residual_and_jacobian(model, names, kind):
    inner = residual_function(model, names, kind)
    return jax.jit(inner), jax.jit(jax.jacfwd(inner, argnums=1))


def make_residual_fn(model: PatternModel, names: Sequence[str], template: ModelParams,
                     kind: str = "deviance") -> tuple[Callable, Callable]:
    """Jitted residuals and Jacobian of one pattern as functions of the named fit parameters.

    Parameters
    ----------
    model : the forward model (build it with ``orientation_margin_deg=None`` and a
        ``lattice_constant_range`` covering the fit, see `xmodel.pattern.build_support`).
    names : fit parameters that vary (edge units, `fits.parameters.PARAMETER_TABLE`).
    template : every other parameter (internal units).
    kind : "deviance" (`deviance_residuals`) or "weighted" (`weighted_residuals`).

    Returns
    -------
    residual : ``(vector, observed, weight) -> (P,)`` residuals; ``observed`` and ``weight``
        are flat (P,) arrays in the model's point order (a polar image ``reshape(-1)``).
    jacobian : ``(vector, observed, weight) -> (P, len(names))``, d residual / d vector in
        edge units (forward mode, `jax.jacfwd`).

    Notes
    -----
    Validation: the Jacobian against central finite differences in float64
    (tests/fits/test_pattern_fit.py).
    """
    names = check_names(names)
    _, arrays = intensity_function(model)
    res, jac = compiled(model, ("residual", names, kind), _build_residual_and_jacobian)

    def residual(vector, observed, weight):
        return res(arrays, jnp.asarray(vector), template, jnp.asarray(observed).reshape(-1),
                   jnp.asarray(weight).reshape(-1))

    def jacobian(vector, observed, weight):
        return jac(arrays, jnp.asarray(vector), template, jnp.asarray(observed).reshape(-1),
                   jnp.asarray(weight).reshape(-1))

    return residual, jacobian


def null_deviance(background_shape, diffuse_shape, observed, weight, n_iter: int = 12):
    """Deviance of the best model without peaks, ``b * A + c * B`` with ``b, c >= 0``.

    Parameters
    ----------
    background_shape : (..., P) the model with background 1 and every other scale 0 (A).
    diffuse_shape : (..., P) the model with diffuse_scale 1 and every other scale 0 (B).
    observed, weight : as in `pointwise_deviance`.
    n_iter : iterations (each an EM step and a projected Newton step, the better one kept).

    Returns
    -------
    (...,) deviance of the fitted background + diffuse model (an upper bound on its minimum,
    equal to it to about 1e-6 relative after a dozen iterations for two components).

    Notes
    -----
    The Poisson deviance is convex in ``(b, c)`` (identity link). Each iteration computes the
    maximum-likelihood EM update for a non-negative Poisson linear model (Shepp & Vardi 1982,
    doi:10.1109/TMI.1982.4307558), ``c_j <- c_j sum_i w_i A_ij d_i / m_i / sum_i w_i A_ij``,
    which never increases the deviance, and the Newton step on the deviance clipped at 0
    (projected Newton, Bertsekas 1982, doi:10.1137/0320018); the one with the lower deviance is
    kept, so the iteration is monotone and converges quadratically near the minimum (200 EM
    steps alone were needed before).
    Validation: against scipy.optimize.minimize (L-BFGS-B) on a random problem
    (tests/fits/test_parameters.py) and against 2000 EM iterations (tests/fits/test_batch.py).
    """
    ok = _valid(observed, weight)
    d = jnp.where(ok, observed, 0.0)
    w = jnp.where(ok, weight, 0.0)
    comps = jnp.stack([background_shape, diffuse_shape], axis=-2)          # (..., 2, P)
    comps = jnp.where(ok[..., None, :], jnp.maximum(comps, 0.0), 0.0)
    norm = jnp.sum(w[..., None, :] * comps, axis=-1)                       # (..., 2)
    total = jnp.sum(w * d, axis=-1)
    safe_norm = jnp.where(norm > 0, norm, 1.0)
    coef = jnp.where(norm > 0, 0.5 * total[..., None] / safe_norm, 0.0)

    def model_of(c):
        return jnp.maximum(jnp.sum(c[..., :, None] * comps, axis=-2), MODEL_FLOOR)

    def dev_of(c):
        return poisson_deviance(model_of(c), observed, weight)

    def step(_, c):
        m = model_of(c)
        ratio = jnp.sum(w[..., None, :] * comps * (d / m)[..., None, :], axis=-1)
        c_em = jnp.where(norm > 0, c * ratio / safe_norm, 0.0)
        grad = norm - ratio                                               # half the gradient
        hess = jnp.einsum("...ip,...jp->...ij", comps * (w * d / m ** 2)[..., None, :], comps, precision=EXACT)
        hess = hess + 1e-12 * jnp.trace(hess, axis1=-2, axis2=-1)[..., None, None] * jnp.eye(2, dtype=hess.dtype)
        c_nt = jnp.where(norm > 0, jnp.maximum(c - jnp.linalg.solve(hess, grad[..., None])[..., 0], 0.0), 0.0)
        c_nt = jnp.where(jnp.all(jnp.isfinite(c_nt), axis=-1, keepdims=True), c_nt, c_em)
        take_nt = (dev_of(c_nt) < dev_of(c_em))[..., None]
        return jnp.where(take_nt, c_nt, c_em).astype(c.dtype)

    coef = jax.lax.fori_loop(0, n_iter, step, coef)
    m = jnp.sum(coef[..., :, None] * comps, axis=-2)
    return poisson_deviance(m, observed, weight)


def check_observed(observed, weight, where: str = "observed") -> str | None:
    """A sentence saying why ``observed``/``weight`` cannot be fitted, or None if they can.

    Bad data: a non-finite or negative observation on a point with ``weight > 0``, a
    non-finite or negative weight, or no point with ``weight > 0``.
    """
    d = np.asarray(observed, np.float64).reshape(-1)
    w = np.asarray(weight, np.float64).reshape(-1)
    if d.shape != w.shape:
        return f"{where} has {d.size} points but the weight has {w.size}; pass arrays of the same shape"
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        i = int(np.flatnonzero(~np.isfinite(w) | (w < 0))[0])
        return f"the weight must be finite and >= 0, but weight[{i}] = {float(w[i])!r}"
    use = w > 0
    if not np.any(use):
        return f"{where} has no point with weight > 0 (everything masked)"
    bad = use & (~np.isfinite(d) | (d < 0))
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        return (f"{where} has {int(bad.sum())} non-finite or negative counts on valid points "
                f"(first flat index {i}, value {float(d[i])!r}); set their weight to 0 to leave them out")
    return None
