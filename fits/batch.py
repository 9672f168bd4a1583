"""The batch path for scans: a vectorised Levenberg-Marquardt over many frames at once.

`fit_batch` fits B frames with one jitted single-frame program (a damped Gauss-Newton loop,
`jax.lax.while_loop`, at most ``max_iter`` accepted steps), called per frame from the host in
``XMODEL_FIT_THREADS`` threads (default: min(2, usable cores); XLA runs one frame on one core),
so that a converged frame stops at once and frames without data are never run (a `jax.vmap`
over frames ran every frame until the slowest stopped, padding included). Each iteration
evaluates the residuals at a trial point; if the objective decreased the step is accepted
(damping / 3) and ``J^T J``, ``J^T r`` are computed there (forward mode, nonlinear parameters
and linear scales in two groups, `fits.objective.split_residual_function`), otherwise it is
rejected (damping x 4) and the normal equations are kept. ``max_iter`` counts the accepted
steps, each a Jacobian; a rejected trial costs one model evaluation (a fifth of a step or less)
and does not count, up to ``_TRIALS_PER_STEP`` iterations per step allowed in all (30 rejections
in a row reach the damping limit anyway). A fit far from its minimum often rejects its first
few trials while the damping grows: counting them cut fits short that were a step away from
converging. The compiled program is cached per model, parameter names and objective kind, and
compiles once per number of points P.

Algorithm, per frame (edge units, `fits.parameters`):

* Marquardt scaling: with ``A = J^T J``, ``g = J^T r`` and ``S = diag(A)^(-1/2)``, solve
  ``(S A S + lambda I) z = -S g`` and step ``delta = S z`` (Moré 1978, doi:10.1007/BFb0067700).
* Bounds by an active set plus clipping (projected LM): a parameter on a bound whose
  gradient points outwards is held for that step, and the trial point is clipped into the
  bounds. Starting values outside the bounds are clipped first.
* Converged when an accepted step lowers the objective by less than ``tol`` relative (or
  ``tol`` absolute when the objective is below 1); when a step is rejected although the
  undamped Gauss-Newton model predicts a gain ``g^T A^-1 g`` below that (the objective is at
  its rounding floor); when after an accepted step that predicted gain is below 1e-3 of it; or
  when no step within the damping limit lowers it (a minimum to working precision).
* Covariance from the final ``J^T J`` (the Fisher information of the Poisson likelihood at
  the solution), scaled by the frame's dispersion (quasi-likelihood, McCullagh & Nelder,
  Generalized Linear Models, 2nd ed. 1989, sec. 9.2): ``phi = X^2 / (n - p)`` with the Pearson
  statistic ``X^2 = sum w (d - m)^2 / m`` of the fit, ``n`` the points of positive weight and
  ``p`` the varying parameters (the moment estimator of the dispersion, preferred there to the
  deviance per degree of freedom, which is biased low at small counts). For the Poisson deviance the covariance is
  multiplied by ``max(phi, 1)``: a frame is never more precise than its counting statistics
  (``phi < 1`` on counts means a small-count bias of the estimate or correlated bins, not a
  better measurement), and beyond them every extra scatter the model does not explain (an
  imperfect model, the beam averaging over a footprint, detector effects) widens the errors
  by ``sqrt(phi)``. For the Pearson ("weighted") kind the covariance is scaled by
  ``X^2 / (n - p)`` itself (least squares with unknown variance). ``inf`` where the matrix is
  singular in that direction.
* With ``clusters`` (the scan fits: `fits.scan.setup.FitSetup.error_clusters`) each parameter's
  variance is widened to the cluster-robust sandwiches' where they are larger (`fits.robust`:
  tiles of about a spot, and whole rings): a misfit of the peak shapes leaves residuals that
  share a sign over a reflection's footprint, or over a shell, which the dispersion, one number
  for the whole frame, does not see.

* A Gaussian prior on some parameters (``prior``, `fits.objective.check_prior`) adds its
  residuals ``(x - mean) / sigma``: the objective becomes ``D + sum ((x - mean) / sigma)^2``, its
  minimum the maximum a posteriori estimate, and ``J^T J`` the information of the posterior's
  normal approximation (Gelman et al., Bayesian Data Analysis, 3rd ed. 2013, sec. 4.1). The
  dispersion scales it as a whole, which widens the prior's part too where ``phi > 1`` (the
  conservative side). The no-signal test's deviance gain leaves the prior out.

Per-frame outcome (`fits.status.FitStatus`), first that applies:

* BAD_DATA: a non-finite or negative count on a point of positive weight (or a bad weight,
  or nothing valid); the frame is not fitted, its values are the (clipped) start, stderr and
  objective ``inf``.
* FAILED: the fit of this frame raised (the others go on), or ended non-finite; values are
  the start.
* NOT_CONVERGED (given up): the fit could not end below its ``stop_above`` objective and was
  stopped (`GiveUp`, ``BatchFit.gave_up``); the values are where it stopped.
* NO_SIGNAL: the fitted model explains the frame no better than background + isotropic
  diffuse scattering: the Poisson deviance gain ``D0 - D1`` (``D0`` of the best
  ``b * background + c * diffuse`` pattern, `fits.objective.null_deviance`) is below
  ``chi2.isf(1e-6, k)`` for the ``k`` varying peak parameters (a likelihood-ratio test;
  conservative threshold because orientation parameters are not identified under the null),
  the gain divided by the frame's dispersion ``max(phi, 1)`` (the quasi-likelihood ratio,
  McCullagh & Nelder sec. 9.2: ``(D0 - D1) / phi`` is asymptotically ``chi2_k`` under the null).
  The fitted values are kept but are not a measurement.
* NOT_CONVERGED: ``max_iter`` accepted steps (or ``_TRIALS_PER_STEP`` times as many
  iterations) reached before convergence.
* AT_BOUND: converged with a varying parameter on a bound.
* OK.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from fits.objective import (
    MODEL_FLOOR,
    Prior,
    _residuals_of,
    check_observed,
    check_prior,
    compiled,
    intensity_function,
    null_deviance,
    poisson_deviance,
    residual_function,
    split_jacobian,
    split_residual_function,
)
from fits.parameters import (
    check_names,
    floor_hits,
    floor_note,
    pack,
    parameter_bounds,
    unpack,
)
from fits.robust import occupied, robust_covariance, sandwich, score_program, with_prior
from fits.status import FitStatus
from xmodel.parameters import ModelParams
from xmodel.pattern import PatternModel
from xmodel.precision import EXACT

_LAMBDA0 = 1e-3
_LAMBDA_MAX = 1e10
_NO_SIGNAL_P = 1e-6
_TINY = 1e-3
#: iterations (accepted and rejected trials) allowed per accepted step of ``max_iter``
_TRIALS_PER_STEP = 3
_PEAKLESS = ("background", "diffuse_scale")


@dataclass
class BatchFit:
    """Result of `fit_batch` for B frames.

    Attributes
    ----------
    params : stacked `ModelParams` (leading axis B), internal units; numpy leaves.
    values : ``{name: (B,)}`` varying parameters in edge units.
    stderr : ``{name: (B,)}`` their standard errors (edge units; ``inf`` where unknown), from
        ``covariance``.
    objective : (B,) final objective (deviance or Pearson chi-square; ``inf`` if not fitted).
    deviance_gain : (B,) Poisson deviance of background + diffuse minus that of the fit (the
        no-signal statistic; 0 where not fitted).
    n_iter : (B,) iterations used.
    dispersion : (B,) Pearson ``X^2 / (n - p)`` of the fit (1 for pure Poisson noise and a right
        model; NaN where not fitted).
    covariance : (B, p, p) covariance of the varying parameters in ``names`` order (edge units,
        scaled by the dispersion as the module docstring says; NaN in a singular direction).
    names : the varying parameters, the order of ``covariance``.
    status : B `FitStatus` values; ``messages`` a sentence per frame.
    gave_up : (B,) the fit was given up (``stop_above``, `GiveUp`; status NOT_CONVERGED).
    limits, floors : (B, p) the varying parameters (``names`` order) that ended on a bound, and
        the widths on their floor (`fits.parameters.floor_hits`); empty where not fitted here.
    """

    params: ModelParams
    values: dict[str, np.ndarray]
    stderr: dict[str, np.ndarray]
    objective: np.ndarray
    n_iter: np.ndarray
    status: list[FitStatus]
    messages: list[str]
    deviance_gain: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dispersion: np.ndarray = field(default_factory=lambda: np.zeros(0))
    covariance: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    names: tuple[str, ...] = ()
    gave_up: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    limits: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    floors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))

    def effective_dispersion(self) -> np.ndarray:
        """(B,) ``max(phi, 1)``: what the likelihood-ratio statistics of these fits are divided by
        and the covariance was scaled with (1 where the dispersion is unknown)."""
        return effective_dispersion(self.dispersion)

    @property
    def codes(self) -> np.ndarray:
        """(B,) `FitStatus.code` of each frame (for HDF5)."""
        return np.array([s.code for s in self.status], np.int8)


@dataclass(frozen=True)
class GiveUp:
    """When `fit_batch` gives up a frame's fit that cannot end below its ``stop_above`` deviance.

    Attributes
    ----------
    after : iterations done before the test applies (>= 1).
    factor : the deviance must exceed the target by more than ``factor`` times the decrease the
        undamped Gauss-Newton step predicts at the current point (``g^T A^-1 g``) ...
    gap : ... and by more than ``gap`` times the target.

    Notes
    -----
    A fit that starts in another basin than the frame's best one (a wrong orientation) keeps
    its deviance far above it, while one that will converge below it is seen heading there by
    the Gauss-Newton model or is already close -- but not always: over 682 refinements of
    neighbour starts in the 31 x 31 twin's neighbour passes (traced iteration by iteration),
    the 333 that converged below their frame's deviance exceeded it, from the third iteration
    on and wherever the excess was over 30 predicted decreases, by up to 0.78 of it (a plateau
    where a parameter sits on its bound or the fit crosses into another basin: one such fit
    predicted 0.5 deviance units and fell by 1500). The test is a prediction, not a bound, hence
    both conditions and a factor of 2 on that excess in the defaults
    (`fits.scan.settings.RefineSettings`: 3, 30, 1.6 give up 3 of the 682, saving 0.3 % of
    their iterations, and none of the 333: the winners' excursions leave no room for a rule that
    is both safe and worth more). A fit that is used without
    converging (the scan fit's re-search, whose unconverged fits of mixed frames still count)
    must not be given up: the test says nothing about where such a fit ends after ``max_iter``.
    """

    after: int
    factor: float
    gap: float

    def __post_init__(self):
        if not (int(self.after) >= 1 and self.factor >= 0 and self.gap >= 0):
            raise ValueError(f"GiveUp needs after >= 1, factor >= 0 and gap >= 0, got {self!r}")


def effective_dispersion(phi) -> np.ndarray:
    """``max(phi, 1)`` (1 where ``phi`` is not finite): the dispersion that scales a Poisson
    fit's likelihood-ratio statistics and covariance (quasi-likelihood, McCullagh & Nelder,
    Generalized Linear Models, 2nd ed. 1989, sec. 9.2).

    Counting noise is the floor: ``phi < 1`` on counts is a small-count bias of the Pearson
    estimate or smoothing between bins, not a more precise measurement, so it never lowers a
    threshold or narrows an error.
    """
    phi = np.asarray(phi, np.float64)
    return np.where(np.isfinite(phi), np.maximum(phi, 1.0), 1.0)


def pearson_statistic(model, observed, weight):
    """Pearson's ``X^2 = sum w (d - m)^2 / m`` over the points of positive weight (JAX; traceable).

    Parameters
    ----------
    model : (..., P) model counts per point (mean counts per bin of a polar image).
    observed : (..., P) observed counts per point (anything where ``weight`` is 0).
    weight : (..., P) pixels per point, 0 where invalid.

    Returns
    -------
    (...,) the statistic (dimensionless); points whose model is below `fits.objective.MODEL_FLOOR`
    are left out.

    Notes
    -----
    The variance of a bin mean of ``w`` Poisson pixels is ``m / w``; ``X^2 / (n - p)`` is the
    moment estimator of the dispersion (McCullagh & Nelder, Generalized Linear Models, 2nd ed.
    1989, sec. 9.2, eq. 9.5 with the Poisson variance function).
    """
    m = jnp.asarray(model)
    use = (weight > 0) & (m > MODEL_FLOOR)
    m_safe = jnp.where(use, m, 1.0)
    return jnp.sum(jnp.where(use, weight * (jnp.where(use, observed, m_safe) - m_safe) ** 2 / m_safe, 0.0), axis=-1)


def covariance_scale(kind: str, pearson, objective, n_points, n_params: int) -> tuple[np.ndarray, np.ndarray]:
    """The dispersion of fits and the factor their ``(J^T J)^-1`` is multiplied by.

    The one rule of every fit in `fits` (`fit_batch`, `fits.pattern_fit.fit_pattern`,
    `covariance_at`).

    Parameters
    ----------
    kind : "deviance" (Poisson maximum likelihood) or "weighted" (Pearson least squares).
    pearson : (...,) Pearson ``X^2`` of the fits (`pearson_statistic`; NaN where not fitted).
    objective : (...,) the fits' objective (the "weighted" kind's chi-square; unused for "deviance").
    n_points : (...,) points of positive weight of each fit.
    n_params : varying parameters.

    Returns
    -------
    dispersion : (...,) ``phi = X^2 / (n - p)`` (NaN where ``pearson`` is not finite).
    factor : (...,) ``max(phi, 1)`` for "deviance" (`effective_dispersion`), ``chi2 / (n - p)``
        for "weighted" (1 where the objective is not finite).

    Notes
    -----
    Quasi-likelihood (McCullagh & Nelder, Generalized Linear Models, 2nd ed. 1989, sec. 9.2):
    the covariance of a Poisson fit is ``phi (J^T J)^-1`` with the Fisher information ``J^T J``
    of the deviance residuals. Counting noise is the floor (``max(phi, 1)``, see
    `effective_dispersion`). For Pearson least squares with unknown variance the factor is the
    reduced chi-square (lmfit's ``scale_covar``).
    """
    _residuals_of(kind)
    pearson = np.asarray(pearson, np.float64)
    dof = np.maximum(np.asarray(n_points, np.float64) - int(n_params), 1.0)
    dispersion = np.where(np.isfinite(pearson), pearson / dof, np.nan)
    if kind == "weighted":
        cost = np.asarray(objective, np.float64)
        factor = np.where(np.isfinite(cost), cost / dof, 1.0)
    else:
        factor = effective_dispersion(dispersion)
    return dispersion, factor


def _inverse_information(a):
    """Variances and covariance ``A^-1`` of the normal matrix ``A = J^T J`` (JAX), inverted with
    Jacobi scaling ``S A S``, ``S = diag(A)^-1/2``; ``inf`` variance and NaN covariance in a
    direction the data do not determine (zero diagonal or a non-positive variance)."""
    diag = jnp.diag(a)
    scale = jnp.where(diag > 0, 1.0 / jnp.sqrt(jnp.where(diag > 0, diag, 1.0)), 0.0)
    inv = jnp.linalg.inv(a * scale[:, None] * scale[None, :] + jnp.diag(jnp.where(diag > 0, 0.0, 1.0)))
    cov = inv * scale[:, None] * scale[None, :]
    var = jnp.diag(cov)
    known = (diag > 0) & jnp.isfinite(var) & (var > 0)
    var = jnp.where(known, var, jnp.inf)
    cov = jnp.where(known[:, None] & known[None, :], cov, jnp.nan)
    return var, cov


def _workers() -> int:
    """Frames fitted at once: the cores this process may use, at most 2 unless
    ``XMODEL_FIT_THREADS`` says otherwise."""
    env = os.environ.get("XMODEL_FIT_THREADS", "")
    if env.strip():
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"XMODEL_FIT_THREADS = {env!r} is not an integer; set it to the number of "
                             "frames to fit in parallel (e.g. 2) or unset it") from None
    return max(1, min(2, len(os.sched_getaffinity(0))))


def _bounds(names, bounds):
    b = parameter_bounds(names, bounds)
    return np.array([b[n][0] for n in names]), np.array([b[n][1] for n in names])


def _normal_equations(split, x, nonlinear, linear):
    """``J^T J`` and ``J^T r`` at ``x`` (`fits.objective.split_jacobian`: two forward-mode passes)."""
    jac, r = split_jacobian(split, x, nonlinear, linear)
    return jnp.matmul(jac.T, jac, precision=EXACT), jnp.matmul(jac.T, r, precision=EXACT)


def _lm_frame(residual, split, groups, arrays, x0, template, observed, weight, lo, hi, max_iter, tol,
              give_up=None):
    """Levenberg-Marquardt for one frame (jitted per frame); see the module docstring.

    ``give_up``: ``(target, after, factor, gap)`` of `GiveUp` (traced scalars), or None: the
    frame is given up once it cannot end below ``target`` (`GiveUp`).
    """
    n = x0.shape[0]

    def f(x):
        return residual(arrays, x, template, observed, weight)

    def g_split(x_nl, x_lin):
        return split(arrays, x_nl, x_lin, template, observed, weight)

    def cost_of(x):
        r = f(x)
        return jnp.sum(r * r)

    a0, g0 = _normal_equations(g_split, x0, *groups)
    state0 = {"x": x0, "a": a0, "g": g0, "cost": cost_of(x0), "lam": jnp.asarray(_LAMBDA0, x0.dtype),
              "it": jnp.asarray(0), "steps": jnp.asarray(0), "done": jnp.asarray(False),
              "gave_up": jnp.asarray(False)}

    def cond(s):
        # max_iter accepted steps (each a Jacobian); a rejected trial costs one model evaluation
        return (~s["done"]) & (s["steps"] < max_iter) & (s["it"] < _TRIALS_PER_STEP * max_iter)

    def scaled(a, g, x):
        held = ((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))
        diag = jnp.diag(a)
        scale = jnp.where((diag > 0) & ~held, 1.0 / jnp.sqrt(jnp.where(diag > 0, diag, 1.0)), 0.0)
        a_s = a * scale[:, None] * scale[None, :] + jnp.diag(jnp.where(scale > 0, 0.0, 1.0))
        return a_s, scale * g, scale

    def decrement(a, g, x):
        """Decrease of the cost predicted for the undamped Gauss-Newton step, ``g^T A^-1 g``."""
        a_s, g_s, _ = scaled(a, g, x)
        dec = -jnp.matmul(g_s, jnp.linalg.solve(a_s + 1e-12 * jnp.eye(n, dtype=a_s.dtype), -g_s), precision=EXACT)
        return jnp.where(jnp.isfinite(dec), dec, jnp.inf)

    def body(s):
        x, a, g, cost = s["x"], s["a"], s["g"], s["cost"]
        a_s, g_s, scale = scaled(a, g, x)
        z = jnp.linalg.solve(a_s + s["lam"] * jnp.eye(n, dtype=a_s.dtype), -g_s)
        x_new = jnp.clip(x + scale * z, lo, hi)
        c_new = cost_of(x_new)
        better = jnp.isfinite(c_new) & (c_new < cost)
        limit = tol * jnp.maximum(cost, 1.0)
        small = cost - c_new <= limit
        stuck = (~better) & (s["lam"] * 4.0 > _LAMBDA_MAX)
        # rejected although the undamped model promises less than the tolerance: the cost is
        # at its floor (rounding), more damping cannot help
        dec_old = decrement(a, g, x)
        flat = (~better) & (dec_old <= limit)
        a_new, g_new = jax.lax.cond(better, lambda: _normal_equations(g_split, x_new, *groups), lambda: (a, g))
        dec_new = decrement(a_new, g_new, x_new)
        # accepted and the next Gauss-Newton step would gain almost nothing (~0.03 standard error)
        tiny = better & (dec_new <= _TINY * limit)
        pick = lambda new, old: jnp.where(better, new, old)  # noqa: E731
        it = s["it"] + 1
        converged = (better & small) | stuck | flat | tiny
        gave_up = jnp.asarray(False)
        if give_up is not None:
            # the deviance stays above the target by more than the Gauss-Newton model promises
            # and by a share of the target (`GiveUp`)
            target, after, factor, gap = give_up
            excess = pick(c_new, cost) - target
            gave_up = ~converged & (it >= after) & (excess > factor * pick(dec_new, dec_old)) & \
                (excess > gap * jnp.abs(target))
        return {"x": pick(x_new, x), "a": a_new, "g": g_new, "cost": pick(c_new, cost),
                "lam": jnp.where(better, jnp.maximum(s["lam"] / 3.0, 1e-12), s["lam"] * 4.0),
                "it": it, "steps": s["steps"] + better.astype(s["steps"].dtype), "done": converged | gave_up,
                "gave_up": gave_up}

    s = jax.lax.while_loop(cond, body, state0)
    var, cov = _inverse_information(s["a"])
    return s["x"], var, cov, s["cost"], s["it"], s["done"] & ~s["gave_up"], s["gave_up"]


def _build_batch(model: PatternModel, names: tuple[str, ...], kind: str, prior: Prior = ()):
    residual = residual_function(model, names, kind, prior)
    split, groups = split_residual_function(model, names, kind, prior)
    fn, _ = intensity_function(model)
    terms = model.components(("background", "diffuse_scale"))

    def frame(arrays, x0, template, observed, weight, lo, hi, max_iter, tol, give_up):
        x, var, cov, cost, it, done, gave_up = _lm_frame(residual, split, groups, arrays, x0, template, observed,
                                                         weight, lo, hi, max_iter, tol, give_up)
        params = unpack(x, names, template)
        m = fn(arrays, params)
        d1 = poisson_deviance(m, observed, weight)
        comp_a, comp_b = terms(arrays, params)      # background and diffuse only: no peak sums
        d0 = null_deviance(comp_a, comp_b, observed, weight)
        return x, var, cov, cost, it, done, d0 - d1, pearson_statistic(m, observed, weight), gave_up

    return jax.jit(frame)


def _frames_and_names(observed, weight, model: PatternModel, vary: Sequence[str], kind: str
                      ) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """The checked parameter names and the (B, P) observations and weights of `fit_batch` and
    `covariance_at` (errors for arguments that are wrong for every frame)."""
    _residuals_of(kind)
    names = check_names(vary)
    if not names:
        raise ValueError("no parameter varies; pass vary=[...] with names from fits.parameters.NAMES")
    obs = np.asarray(observed, np.float64)
    w = np.asarray(weight, np.float64)
    if obs.ndim < 2 or obs.shape != w.shape:
        raise ValueError(f"observed {obs.shape} and weight {w.shape} must have the same shape (B, P) or "
                         "(B, n_chi, n_q); wrap a single frame as frames[None]")
    b = obs.shape[0]
    obs, w = obs.reshape(b, -1), w.reshape(b, -1)
    if obs.shape[1] != model.pixels.size:
        raise ValueError(f"each frame has {obs.shape[1]} points but the model has {model.pixels.size} "
                         f"(shape {model.pixels.shape}); fit the images the model was built for")
    return names, obs, w


def _stack(init: ModelParams, b: int) -> ModelParams:
    lead = np.ndim(init.lattice_constant)
    if lead == 0:
        return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (b,) + jnp.shape(x)), init)
    if np.shape(init.lattice_constant) != (b,):
        raise ValueError(f"init holds parameters for {np.shape(init.lattice_constant)} frames but observed "
                         f"has {b}; stack one ModelParams per frame (leading axis {b}) or pass one for all")
    return init


def _check_clusters(clusters, n_points: int, n_prior: int) -> np.ndarray:
    """(S, P + K) clusters of the points and of the prior's residuals, one row per clustering
    (`fits.robust.with_prior`)."""
    c = np.asarray(clusters)
    c2 = c[None] if c.ndim == 1 else c
    if c2.ndim != 2 or c2.shape[0] < 1 or c2.shape[1] != n_points or c.dtype.kind not in "iu" or \
            (c.size and c.min() < 0):
        raise ValueError(f"clusters must be ({n_points},) or (S, {n_points}) non-negative integers, one per point "
                         f"and clustering (fits.robust.tile_clusters); got shape {c.shape}, dtype {c.dtype}")
    return with_prior(c2, n_prior)


def _score_program(model, names, kind, prior_t, ids):
    return None if ids is None else score_program(model, names, kind, prior_t, [int(r.max()) + 1 for r in ids])


def _widen_to_sandwich(var: np.ndarray, cov: np.ndarray, robust: Mapping[int, tuple], ids: np.ndarray | None,
                       weight: np.ndarray, n_prior: int, fitted: np.ndarray) -> None:
    """Widen the (dispersion-scaled) ``var`` and ``cov`` of the fitted frames in place to the
    cluster-robust sandwich where it is wider (`fits.robust.robust_covariance`)."""
    if ids is None:
        return
    for i, (a, bmats) in robust.items():
        if not fitted[i]:
            continue
        for row, bmat in zip(ids, bmats):        # each clustering widens what the last left
            c = occupied(row[:weight.shape[1]], weight[i], n_prior)
            cov[i] = robust_covariance(cov[i], sandwich(a, bmat, c))
        d = np.diag(cov[i])
        var[i] = np.where(np.isfinite(d) & (d > 0), d, var[i])


def fit_batch(observed, weight, model: PatternModel, init: ModelParams, vary: Sequence[str], *,
              bounds: dict[str, tuple[float, float]] | None = None, max_iter: int = 50,
              kind: str = "deviance", tol: float = 1e-6,
              no_signal_deviance: float | None = None, stop_above: np.ndarray | float | None = None,
              give_up: GiveUp | None = None, prior: Mapping[str, tuple[float, float]] | None = None,
              clusters: np.ndarray | None = None) -> BatchFit:
    """Fit B frames at once; one status per frame, never an exception for a bad frame.

    Parameters
    ----------
    observed : (B, P) or (B, n_chi, n_q) counts per point in the model's point order (mean
        counts per bin for reduced polar images; NaN allowed where the weight is 0).
    weight : same shape; pixels per point (the reduction's ``counts``), 0 where invalid.
    model : forward model (built with ``orientation_margin_deg=None`` and ranges covering
        the fit, see `fits.pattern_fit.fit_pattern`).
    init : starting parameters, stacked with leading axis B (e.g. from the global search,
        full SL orientation in ``base_orientation``), or one `ModelParams` for every frame.
    vary : names from `fits.parameters.PARAMETER_TABLE` (edge units).
    bounds : ``{name: (min, max)}`` in edge units replacing the table's bounds.
    max_iter : accepted Levenberg-Marquardt steps per frame (each one Jacobian evaluation; the
        rejected trials between them do not count, up to ``_TRIALS_PER_STEP * max_iter``
        iterations in all).
    kind : "deviance" (Poisson maximum likelihood) or "weighted" (Pearson least squares).
    tol : relative decrease of the objective below which a frame has converged.
    no_signal_deviance : deviance gain below which a frame has no signal (default
        ``chi2.isf(1e-6, k)``, ``k`` the varying parameters other than background and
        diffuse_scale).
    stop_above : (B,) or scalar objective each frame's fit must end below to be of use (e.g. the
        deviance of the frame's best fit so far; ``inf``: none); with ``give_up``.
    give_up : when a fit is given up because it cannot get below ``stop_above`` (`GiveUp`);
        it then ends NOT_CONVERGED (``gave_up``) at the objective it had reached.
    prior : ``{name: (mean, sigma)}``, edge units: independent Gaussian priors on some varying
        parameters (`fits.objective.check_prior`). The objective, the convergence tests and
        ``stop_above`` then include ``sum ((x - mean) / sigma)^2`` (the fit is the maximum a
        posteriori estimate) and the covariance is that of the posterior's normal approximation
        (the prior rows in ``J^T J``), scaled by the dispersion like the rest; the deviance gain
        of the no-signal test does not include it. None: maximum likelihood.
    clusters : (P,) integer cluster of every point (`fits.robust.tile_clusters`), or (S, P) for
        S clusterings (tiles and whole rings, `fits.robust.ring_clusters`), or None. With them
        each parameter's variance is the quasi-likelihood one widened to the cluster-robust
        sandwich of each clustering wherever that is wider (`fits.robust.robust_covariance`):
        error bars that hold when the model misses the peak shapes. None: the quasi-likelihood
        covariance alone.

    Returns
    -------
    BatchFit

    Raises
    ------
    ValueError, KeyError
        For arguments that are wrong for every frame (shapes, names, kind, bounds); data
        problems of single frames are statuses, not exceptions.

    Notes
    -----
    Levenberg-Marquardt with Marquardt scaling (Moré 1978, doi:10.1007/BFb0067700), Poisson
    deviance residuals (McCullagh & Nelder 1989, doi:10.1007/978-1-4899-3242-6), the
    likelihood-ratio no-signal test (Wilks 1938, doi:10.1214/aoms/1177732360).
    Validation: agrees with `fits.pattern_fit.fit_pattern` (lmfit/MINPACK) on the same frame,
    values, dispersion and dispersion-scaled standard errors; the dispersion of Poisson frames
    is 1 and of frames with three times the Poisson variance 3, their errors sqrt(3) wider;
    recovers known parameters of synthetic frames, flags a NaN frame BAD_DATA and a
    background-only frame NO_SIGNAL (tests/fits/test_batch.py).
    """
    names, obs, w = _frames_and_names(observed, weight, model, vary, kind)
    prior_t = check_prior(names, prior)
    b = obs.shape[0]
    if max_iter < 1:
        raise ValueError(f"max_iter = {max_iter!r} must be at least 1")
    if (stop_above is None) != (give_up is None):
        raise ValueError("fit_batch: pass stop_above and give_up together (the targets and the rule that gives "
                         "a fit up), or neither")
    target = np.full(b, np.inf) if stop_above is None else np.broadcast_to(
        np.asarray(stop_above, np.float64), (b,)).copy()
    if np.any(np.isnan(target)):
        raise ValueError("fit_batch: stop_above holds NaN; pass inf for frames without a target")
    lo, hi = _bounds(names, bounds)
    ids = None if clusters is None else _check_clusters(clusters, obs.shape[1], len(prior_t))
    init = _stack(init, b)
    x0 = np.clip(np.asarray(pack(init, names), np.float64), lo, hi)

    status: list[FitStatus | None] = [None] * b
    messages = [""] * b
    for i in range(b):
        bad = check_observed(obs[i], w[i], where=f"frame {i}")
        if bad is not None:
            status[i], messages[i] = FitStatus.BAD_DATA, bad
    good = np.array([s is None for s in status])
    obs_c = np.where(good[:, None] & (w > 0), obs, 0.0)
    w_c = np.where(good[:, None], w, 0.0)

    n = len(names)
    x, var = x0.copy(), np.full((b, n), np.inf)
    cov = np.full((b, n, n), np.nan)
    cost, gain, pearson = np.full(b, np.inf), np.zeros(b), np.full(b, np.nan)
    n_iter, done, gave_up = np.zeros(b, np.int64), np.zeros(b, bool), np.zeros(b, bool)
    robust: dict[int, tuple] = {}
    if good.any():
        run = compiled(model, ("batch", names, kind, prior_t), _build_batch)
        _, arrays = intensity_function(model)
        dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
        lo_j, hi_j = jnp.asarray(lo, dtype), jnp.asarray(hi, dtype)
        it_j, tol_j = jnp.asarray(int(max_iter)), jnp.asarray(float(tol), dtype)
        rule = give_up or GiveUp(after=1, factor=np.inf, gap=np.inf)
        rule_j = (jnp.asarray(int(rule.after)), jnp.asarray(float(rule.factor), dtype),
                  jnp.asarray(float(rule.gap), dtype))
        leaves = jax.tree_util.tree_map(np.asarray, init)
        scores = _score_program(model, names, kind, prior_t, ids)
        ids_j = None if ids is None else jnp.asarray(ids)

        def one(i):
            p_i = jax.tree_util.tree_map(lambda v: v[i], leaves)
            o_i, w_i = jnp.asarray(obs_c[i], dtype), jnp.asarray(w_c[i], dtype)
            out = run(arrays, jnp.asarray(x0[i], dtype), p_i, o_i, w_i, lo_j, hi_j, it_j, tol_j,
                      (jnp.asarray(target[i], dtype),) + rule_j)
            if scores is not None and not bool(np.asarray(out[8])):   # not given up: the information
                out = tuple(out) + tuple(scores(arrays, out[0], p_i, o_i, w_i, ids_j))   # and scores there
            return tuple(np.asarray(o) for o in out)

        rows = [int(i) for i in np.flatnonzero(good)]
        workers = min(_workers(), len(rows))
        if workers > 1:          # XLA runs one frame on one core: frames in parallel threads
            with ThreadPoolExecutor(workers) as pool:
                futures = {i: pool.submit(one, i) for i in rows}
            results = {}
            for i, fut in futures.items():
                err = fut.exception()
                results[i] = err if err is not None else fut.result()
        else:
            results = {}
            for i in rows:
                try:
                    results[i] = one(i)
                except Exception as err:  # noqa: BLE001
                    results[i] = err
        for i, out in results.items():      # one frame failing never stops the batch
            if isinstance(out, Exception):
                status[i], messages[i] = FitStatus.FAILED, f"the fit of frame {i} raised {type(out).__name__}: {out}"
            else:
                x[i], var[i], cov[i], cost[i], n_iter[i], done[i], gain[i], pearson[i], gave_up[i] = out[:9]
                if len(out) > 9:
                    robust[i] = out[9:]

    n_valid = (w_c > 0).sum(axis=1)
    fitted = np.isfinite(cost)
    dispersion, factor = covariance_scale(kind, np.where(fitted, pearson, np.nan), cost, n_valid, n)
    var = var * factor[:, None]
    cov = cov * factor[:, None, None]
    _widen_to_sandwich(var, cov, robust, ids, w_c, len(prior_t), fitted & np.all(np.isfinite(x), axis=1))
    lr_scale = effective_dispersion(dispersion)
    k = sum(1 for nm in names if nm not in _PEAKLESS)
    threshold = float(scipy.stats.chi2.isf(_NO_SIGNAL_P, max(k, 1))) if no_signal_deviance is None \
        else float(no_signal_deviance)
    at_bound, at_floor = floor_hits(names, x, lo, hi)
    for i in range(b):
        if status[i] is not None:
            continue
        if not (np.all(np.isfinite(x[i])) and np.isfinite(cost[i])):
            status[i] = FitStatus.FAILED
            messages[i] = f"the fit of frame {i} ended with a non-finite objective or parameters; start closer"
            x[i], var[i], cost[i], cov[i], dispersion[i] = x0[i], np.inf, np.inf, np.nan, np.nan
        elif gave_up[i]:
            status[i] = FitStatus.NOT_CONVERGED
            messages[i] = (f"frame {i}: given up after {n_iter[i]} iterations: objective {cost[i]:.6g} cannot end "
                           f"below {target[i]:.6g}")
        elif gain[i] / lr_scale[i] < threshold:
            status[i] = FitStatus.NO_SIGNAL
            messages[i] = (f"frame {i}: the fitted peaks lower the Poisson deviance by {gain[i]:.3g} (divided by "
                           f"the dispersion {lr_scale[i]:.3g}), less than the no-signal threshold {threshold:.3g}")
        elif not done[i]:
            status[i] = FitStatus.NOT_CONVERGED
            messages[i] = (f"frame {i}: not converged after {n_iter[i]} iterations (max_iter={max_iter} accepted "
                           f"steps)")
        elif at_bound[i].any():
            status[i] = FitStatus.AT_BOUND
            messages[i] = f"frame {i}: at a bound: {', '.join(np.asarray(names)[at_bound[i]])}"
        else:
            status[i], messages[i] = FitStatus.OK, f"frame {i}: converged in {n_iter[i]} iterations"
        if status[i] in (FitStatus.OK, FitStatus.AT_BOUND):
            messages[i] += floor_note(np.asarray(names)[at_floor[i]])
    stderr = np.sqrt(var)
    params = jax.tree_util.tree_map(np.asarray, unpack(jnp.asarray(x), names, init))      # rows indexed on the host
    return BatchFit(params=params, values={nm: x[:, j].copy() for j, nm in enumerate(names)},
                    stderr={nm: stderr[:, j].copy() for j, nm in enumerate(names)}, objective=cost,
                    n_iter=n_iter, status=list(status), messages=messages, deviance_gain=gain,
                    dispersion=dispersion, covariance=cov, names=tuple(names), gave_up=gave_up,
                    limits=at_bound, floors=at_floor)


def _build_covariance(model: PatternModel, names: tuple[str, ...], kind: str, prior: Prior = ()):
    residual = residual_function(model, names, kind, prior)
    split, groups = split_residual_function(model, names, kind, prior)
    fn, _ = intensity_function(model)

    def frame(arrays, x, template, observed, weight):
        a, _ = _normal_equations(lambda x_nl, x_lin: split(arrays, x_nl, x_lin, template, observed, weight),
                                 x, *groups)
        var, cov = _inverse_information(a)
        r = residual(arrays, x, template, observed, weight)
        m = fn(arrays, unpack(x, names, template))
        return var, cov, jnp.sum(r * r), pearson_statistic(m, observed, weight)

    return jax.jit(frame)


def covariance_at(observed, weight, model: PatternModel, params: ModelParams, vary: Sequence[str], *,
                  kind: str = "deviance", prior: Mapping[str, tuple[float, float]] | None = None,
                  clusters: np.ndarray | None = None) -> BatchFit:
    """The standard errors and covariance of B frames at given parameters, without fitting.

    What `fit_batch` reports at its solution, for parameters found elsewhere (a stored scan fit
    read back with `fits.scan.starts.params_from_row`, the winner of a boundary line) or for
    another set of varying parameters.

    Parameters
    ----------
    observed, weight : (B, P) or (B, n_chi, n_q), as for `fit_batch`.
    model : the forward model of those points.
    params : stacked `ModelParams` (leading axis B) or one for every frame (internal units).
    vary : names from `fits.parameters.PARAMETER_TABLE` whose covariance is wanted (the
        parameters the fit varied: the others are held, their errors not propagated).
    kind : "deviance" or "weighted".
    prior : Gaussian priors as for `fit_batch` (the fit's, so that the covariance is the one it
        reports).
    clusters : (P,) or (S, P) clusters of the points for the cluster-robust widening, as for
        `fit_batch`.

    Returns
    -------
    BatchFit
        ``values`` at ``params``, ``stderr``, ``covariance``, ``dispersion``, ``objective`` as
        `fit_batch` computes them at its solution (`covariance_scale`); ``n_iter`` 0; status
        BAD_DATA for frames with bad data (stderr ``inf``), OK otherwise (nothing is judged).

    Notes
    -----
    ``C = factor (J^T J)^-1`` with ``J`` the Jacobian of the residuals at ``params``
    (`_inverse_information`, `covariance_scale`); at a minimum of the deviance this is the
    inverse Fisher information of the Poisson likelihood times the dispersion (McCullagh &
    Nelder 1989, sec. 9.2). Validation: equals `fit_batch`'s covariance at its solution
    (tests/fits/test_batch.py).
    """
    names, obs, w = _frames_and_names(observed, weight, model, vary, kind)
    prior_t = check_prior(names, prior)
    b = obs.shape[0]
    params = _stack(params, b)
    x = np.asarray(pack(params, names), np.float64)
    n = len(names)
    var, cov = np.full((b, n), np.inf), np.full((b, n, n), np.nan)
    cost, pearson = np.full(b, np.inf), np.full(b, np.nan)
    status, messages = [FitStatus.OK] * b, [""] * b
    ids = None if clusters is None else _check_clusters(clusters, obs.shape[1], len(prior_t))
    run = compiled(model, ("covariance", names, kind, prior_t), _build_covariance)
    scores = _score_program(model, names, kind, prior_t, ids)
    _, arrays = intensity_function(model)
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    leaves = jax.tree_util.tree_map(np.asarray, params)
    robust: dict[int, tuple] = {}
    for i in range(b):
        bad = check_observed(obs[i], w[i], where=f"frame {i}")
        if bad is not None:
            status[i], messages[i] = FitStatus.BAD_DATA, bad
            continue
        p_i = jax.tree_util.tree_map(lambda v, k=i: v[k], leaves)
        x_i, o_i = jnp.asarray(x[i], dtype), jnp.asarray(np.where(w[i] > 0, obs[i], 0.0), dtype)
        w_i = jnp.asarray(w[i], dtype)
        var[i], cov[i], cost[i], pearson[i] = (np.asarray(o) for o in run(arrays, x_i, p_i, o_i, w_i))
        if scores is not None:
            robust[i] = tuple(np.asarray(o) for o in scores(arrays, x_i, p_i, o_i, w_i, jnp.asarray(ids)))
    dispersion, factor = covariance_scale(kind, pearson, cost, (w > 0).sum(axis=1), n)
    var, cov = var * factor[:, None], cov * factor[:, None, None]
    _widen_to_sandwich(var, cov, robust, ids, w, len(prior_t), np.isfinite(cost) & np.all(np.isfinite(x), axis=1))
    stderr = np.sqrt(var)
    return BatchFit(params=params, values={nm: x[:, j].copy() for j, nm in enumerate(names)},
                    stderr={nm: stderr[:, j].copy() for j, nm in enumerate(names)}, objective=cost,
                    n_iter=np.zeros(b, np.int64), status=status, messages=messages, deviance_gain=np.zeros(b),
                    dispersion=dispersion, covariance=cov, names=tuple(names), gave_up=np.zeros(b, bool))
