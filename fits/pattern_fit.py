"""The interactive path: fit one pattern with lmfit and the JAX Jacobian.

`fit_pattern` builds lmfit `Parameters` from the parameter table (`fits.parameters`), hands
``lmfit.Minimizer`` (method "leastsq", MINPACK Levenberg-Marquardt) the residuals of
`fits.objective` and their Jacobian from `jax.jacfwd` as ``Dfun``, and returns a
`PatternFit` with values, standard errors, correlations, lmfit's ``fit_report`` and a
`fits.status.FitStatus`.

Bounds. lmfit maps a bounded parameter ``p`` to an unbounded internal variable ``x``
(MINUIT's transformation, e.g. ``p = min + (sin x + 1)(max - min) / 2``) and, when ``Dfun``
is given, multiplies the Jacobian column we return (``d r / d p``, external units) by
``Parameter.scale_gradient(x) = d p / d x`` (``Minimizer._jacobian``). So ``Dfun`` returns
the Jacobian with respect to the *external* values and lmfit applies the chain rule; the test
compares the resulting internal Jacobian with finite differences in the internal variables,
bounds active. The same transformation is why an ``expr`` constraint cannot be allowed on a
model parameter: its derivative would be missing from the Jacobian.

Standard errors: the inverse of ``J^T J`` at the solution (for the deviance the Fisher
information of the Poisson likelihood) scaled by the rule of every fit in `fits`
(`fits.batch.covariance_scale`): for the deviance by the Pearson dispersion ``max(phi, 1)``
(quasi-likelihood, McCullagh & Nelder 1989 sec. 9.2), for the Pearson ("weighted") residuals by
the reduced chi-square. lmfit's own scaling is switched off (``scale_covar=False``) and the
scaled errors are written back into the lmfit result, so ``fit_report`` shows them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

from fits.batch import covariance_scale, pearson_statistic
from fits.objective import (
    _residuals_of,
    check_observed,
    intensity_function,
    make_residual_fn,
)
from fits.parameters import (
    NAMES,
    PARAMETER_TABLE,
    check_names,
    edge_value,
    floor_hits,
    from_lmfit,
    to_lmfit,
)
from fits.status import FitStatus
from xmodel.parameters import ModelParams
from xmodel.pattern import PatternModel


@dataclass
class PatternFit:
    """Result of `fit_pattern`.

    Attributes
    ----------
    params : fitted parameters (internal units; ``init`` for BAD_DATA and FAILED).
    values : every table parameter in edge units (`fits.parameters.PARAMETER_TABLE`).
    stderr : standard error of each varying parameter (edge units); ``inf`` where it could
        not be estimated (see ``message``).
    correl : ``{name: {other: correlation}}`` between varying parameters.
    objective : final objective (sum of squared residuals: the Poisson deviance for
        ``kind="deviance"``, Pearson's chi-square for "weighted"); ``inf`` if no fit ran.
    status : the outcome; ``message`` says more (lmfit's message, the bad data, the error).
    result : lmfit's `MinimizerResult` (None when no fit ran); its ``covar`` and parameter
        ``stderr`` are the scaled ones.
    dispersion : Pearson ``X^2 / (n - p)`` at the solution (`fits.batch.covariance_scale`; 1 for
        counting noise and a right model; NaN when no fit ran).
    """

    params: ModelParams
    values: dict[str, float]
    stderr: dict[str, float]
    correl: dict[str, dict[str, float]]
    objective: float
    status: FitStatus
    message: str
    result: object | None = field(default=None, repr=False)
    dispersion: float = math.nan

    def report(self, **kws) -> str:
        """lmfit's ``fit_report`` (statistics, values, errors, correlations, the "at boundary"
        and "at initial value" diagnostics) preceded by the status line."""
        head = f"[[Status]]\n    {self.status.name}: {self.message}\n"
        if self.result is None:
            return head
        import lmfit
        return head + lmfit.fit_report(self.result, **kws)


def _check_parameters(lp, vary):
    """Refuse lmfit Parameters the JAX Jacobian cannot serve; return the varying names."""
    for name, p in lp.items():
        if name not in NAMES:
            raise ValueError(f"lmfit parameter {name!r} is not a model parameter; fit_pattern only takes "
                             f"the names of fits.parameters.PARAMETER_TABLE: {list(NAMES)}. Remove it, "
                             "or fit it in your own lmfit objective")
        if p.expr:
            raise ValueError(f"lmfit parameter {name!r} has the constraint expr={p.expr!r}, but the JAX "
                             "Jacobian handed to lmfit cannot see constraints between model parameters; "
                             f"set {name!r} to vary or fix it (vary=False) instead")
    if vary is not None:
        vary = set(check_names(vary))
        for name, p in lp.items():
            p.vary = name in vary
    names = tuple(n for n, p in lp.items() if p.vary)
    if not names:
        raise ValueError("no parameter varies; pass vary=[...] with names from "
                         f"{list(NAMES)}, e.g. vary=['lattice_constant', 'inplane_deg']")
    return names


def _placeholder(init: ModelParams, vary: Sequence[str], status: FitStatus, message: str) -> PatternFit:
    values = {n: float(np.asarray(edge_value(init, n)).reshape(-1)[0]) for n in NAMES}
    return PatternFit(params=init, values=values, stderr={n: math.inf for n in vary}, correl={},
                      objective=math.inf, status=status, message=message, result=None)


def _scale_errors(result, observed, weight, model: PatternModel, fitted: ModelParams, kind: str) -> float:
    """Scale lmfit's unscaled covariance and standard errors by `fits.batch.covariance_scale`
    (in place); return the Pearson dispersion of the fit."""
    fn, arrays = intensity_function(model)
    m = np.asarray(fn(arrays, fitted), np.float64).reshape(-1)
    pearson = float(pearson_statistic(m, np.where(weight > 0, observed, 0.0), weight))
    dispersion, factor = covariance_scale(kind, pearson, float(result.chisqr), int((weight > 0).sum()),
                                          int(result.nvarys))
    factor = float(factor)
    if result.covar is not None:
        result.covar = result.covar * factor
    for p in result.params.values():
        if p.stderr is not None:
            p.stderr = p.stderr * math.sqrt(factor)
    return float(dispersion)


def _at_bound(lp, names) -> tuple[list[str], list[str]]:
    """Names of the varying parameters on a limit and on their floor (`fits.parameters.floor_hits`)."""
    names = list(names)
    x = np.array([lp[n].value for n in names], np.float64)
    lo = np.array([lp[n].min for n in names], np.float64)
    hi = np.array([lp[n].max for n in names], np.float64)
    limit, floor = floor_hits(names, x, lo, hi)
    return [n for n, b in zip(names, limit) if b], [n for n, b in zip(names, floor) if b]


def lmfit_problem(observed, weight, model: PatternModel, init: ModelParams, parameters,
                  names: Sequence[str], kind: str = "deviance"):
    """The ``lmfit.Minimizer`` and ``Dfun`` that `fit_pattern` runs (exposed for tests and tools).

    ``observed``, ``weight``: flat (P,) arrays already checked (`fits.objective.check_observed`);
    ``parameters``: lmfit Parameters of the table; ``names``: the varying ones in their order
    (lmfit's ``var_names``). The residual vector holds the points with ``weight > 0`` only, so
    lmfit's ``ndata`` counts valid points. ``Dfun(pars)`` returns ``d residual / d value``
    (n_residuals x n_varying, external units); lmfit rescales it to its internal variables.
    """
    import lmfit

    template = from_lmfit(parameters, init)
    residual, jacobian = make_residual_fn(model, names, template, kind)
    d = np.asarray(observed, np.float64).reshape(-1)
    w = np.asarray(weight, np.float64).reshape(-1)
    rows = np.flatnonzero(w > 0)
    dj, wj = jnp.asarray(np.where(w > 0, d, 0.0)), jnp.asarray(w)

    def vector(pars):
        return np.array([pars[n].value for n in names], np.float64)

    def userfcn(pars):
        return np.asarray(residual(vector(pars), dj, wj), np.float64)[rows]

    def dfun(pars):
        return np.asarray(jacobian(vector(pars), dj, wj), np.float64)[rows]

    mini = lmfit.Minimizer(userfcn, parameters, scale_covar=False, nan_policy="raise")
    return mini, dfun


def fit_pattern(observed, weight, model: PatternModel, init: ModelParams, vary: Sequence[str] | None, *,
                bounds: dict[str, tuple[float, float]] | None = None, kind: str = "deviance",
                throw: bool = True, max_nfev: int = 200, parameters=None) -> PatternFit:
    """Fit one pattern by Levenberg-Marquardt (lmfit "leastsq") with the JAX Jacobian.

    Parameters
    ----------
    observed : counts per point in ``model``'s point order: a polar image (n_chi, n_q) of mean
        counts per bin, or any array with ``model.pixels.size`` elements.
    weight : same shape; pixels per point (the reduction's ``counts``; 1 for raw pixels), 0
        where a point is invalid (NaN observations must have weight 0).
    model : forward model on the same points; build it with ``orientation_margin_deg=None``
        and a ``lattice_constant_range`` covering the bounds of ``lattice_constant``.
    init : starting parameters (internal units); also supplies every fixed field
        (``base_orientation``, ``relationship``).
    vary : names from `fits.parameters.PARAMETER_TABLE` that vary (edge units: degrees for
        ``_deg`` names, FWHM for ``disorder_deg``). None: the vary flags of ``parameters``.
    bounds : ``{name: (min, max)}`` in edge units replacing the table's bounds.
    kind : "deviance" (Poisson maximum likelihood) or "weighted" (Pearson least squares).
    throw : raise on bad data, on an error inside the fit and on non-convergence (True), or
        return a `PatternFit` whose ``status`` says what happened (False, for scans).
    max_nfev : limit on residual evaluations (lmfit's ``max_nfev``).
    parameters : lmfit ``Parameters`` to start from instead of ``to_lmfit(init, vary, bounds)``
        (values, bounds, vary flags as edited by a user); only table names, no ``expr``
        constraints.

    Returns
    -------
    PatternFit

    Raises
    ------
    ValueError
        Unknown ``kind``; no varying parameter; ``expr`` constraints or foreign names in
        ``parameters``; shapes that do not match the model; with ``throw=True`` also bad data.
    RuntimeError
        With ``throw=True``, when the fit does not converge within ``max_nfev``.

    Notes
    -----
    Objectives: `fits.objective` (Poisson deviance residuals, McCullagh & Nelder 1989,
    doi:10.1007/978-1-4899-3242-6). Algorithm: MINPACK lmder (Moré 1978,
    doi:10.1007/BFb0067700) through lmfit (doi:10.5281/zenodo.11813).
    Validation: synthetic Poisson patterns from the forward model with known parameters at
    1e5-1e7 counts, recovered within tolerances that shrink with counts; the Jacobian that
    lmfit uses against finite differences with bounds active (tests/fits/test_pattern_fit.py).
    """
    _residuals_of(kind)  # validates kind
    d = np.asarray(observed, np.float64).reshape(-1)
    w = np.asarray(weight, np.float64).reshape(-1)
    if d.size != model.pixels.size:
        raise ValueError(f"observed has {d.size} points but the model has {model.pixels.size} "
                         f"(shape {model.pixels.shape}); fit the image the model was built for")
    if parameters is not None:
        lp = parameters.copy()
        if bounds:
            raise ValueError("pass bounds either in `parameters` or in `bounds`, not both")
    else:
        lp = to_lmfit(init, vary if vary is not None else [s.name for s in PARAMETER_TABLE if s.vary],
                      bounds)
    names = _check_parameters(lp, vary)

    bad = check_observed(d, w)
    if bad is not None:
        if throw:
            raise ValueError(f"cannot fit this pattern: {bad}")
        return _placeholder(init, names, FitStatus.BAD_DATA, bad)

    try:
        mini, dfun = lmfit_problem(d, w, model, init, lp, names, kind)
        result = mini.minimize(method="leastsq", Dfun=dfun, col_deriv=False, max_nfev=max_nfev)
    except Exception as err:
        if throw:
            raise
        return _placeholder(init, names, FitStatus.FAILED, f"{type(err).__name__}: {err}")

    fitted = from_lmfit(result.params, init)
    dispersion = _scale_errors(result, d, w, model, fitted, kind)
    values = {n: float(result.params[n].value) for n in NAMES}
    stderr = {n: (float(result.params[n].stderr) if result.params[n].stderr is not None else math.inf)
              for n in names}
    correl = {n: {k: float(v) for k, v in (result.params[n].correl or {}).items()} for n in names}
    message = result.message
    at_bound, at_floor = _at_bound(result.params, names)
    if (getattr(result, "aborted", False) or getattr(result, "ier", 1) == 5) and at_bound:
        # A parameter held at its bound by lmfit's sin transform has a vanishing derivative, so
        # MINPACK's tolerances may never be met there: the bound, not the start, is the cause.
        status = FitStatus.AT_BOUND
        message = (f"stopped after {result.nfev} evaluations (max_nfev={max_nfev}) with "
                   f"{', '.join(at_bound)} at a bound: {result.message} At a bound: {', '.join(at_bound)}.")
    elif getattr(result, "aborted", False) or getattr(result, "ier", 1) == 5:
        status = FitStatus.NOT_CONVERGED
        message = f"stopped after {result.nfev} evaluations (max_nfev={max_nfev}): {result.message}"
    elif not result.success:
        status = FitStatus.FAILED
    elif at_bound:
        status = FitStatus.AT_BOUND
        message = f"{result.message} At a bound: {', '.join(at_bound)}."
    else:
        status = FitStatus.OK
    if at_floor and status in (FitStatus.OK, FitStatus.AT_BOUND):
        message = f"{message} Unresolved (at their floor): {', '.join(at_floor)}."
    if throw and status is FitStatus.NOT_CONVERGED:
        raise RuntimeError(f"fit_pattern did not converge: {message}; raise max_nfev, start closer "
                           "(e.g. from the global search), or pass throw=False to get the partial result")
    if throw and status is FitStatus.FAILED:
        raise RuntimeError(f"fit_pattern failed: {message}")
    return PatternFit(params=fitted, values=values, stderr=stderr, correl=correl,
                      objective=float(result.chisqr), status=status, message=message, result=result,
                      dispersion=dispersion)
