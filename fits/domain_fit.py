"""Per-domain fits: a joint fit of a domain's patterns with shared structure, and a fit of the
domain-averaged pattern (paper Table S1, S2).

`fit_domain` fits M polar patterns of one domain at once. Shared by all patterns: the SL
lattice constant ``a`` and the NC orientational disorder ``dPhi`` (and the configuration, chosen
by the lower total deviance when several are given). Per pattern: the orientation offsets
(in-plane angle, tilt1, tilt2 about the pattern's starting orientation) and the four scales
(SL peaks, diffuse, AL, background). The Jacobian has an arrow structure: each pattern's
residuals depend on the 2 shared and its own 7 parameters, so the per-pattern blocks (M, P, 9)
come from one vmapped `jax.jacfwd`, and the normal equations ``J^T J`` (2 + 7M square) are
assembled from them in numpy.

`fit_domain_average` fits the mean pattern of a domain, one pattern with every parameter of
`fits.scan.settings.DEFAULT_VARY` free (`fits.batch.fit_batch`).

Units: edge units of `fits.parameters` (A, deg with ``_deg``, counts); orientations SL crystal
-> lab (docs/conventions.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from fits.batch import fit_batch
from fits.objective import compiled, intensity_function, residual_function
from fits.parameters import pack, unpack
from fits.parameters import parameter_bounds as table_bounds
from fits.scan.settings import DEFAULT_VARY
from fits.status import FitStatus
from xmodel import orientation
from xmodel.parameters import FWHM_PER_SIGMA, ModelParams

#: shared (domain) parameters, then per-pattern parameters (edge names of fits.parameters)
SHARED = ("lattice_constant", "disorder_deg")
LOCAL = ("inplane_deg", "tilt1_deg", "tilt2_deg", "sl_scale", "diffuse_scale", "al_scale", "background")


def parameter_bounds(names: tuple[str, ...] | list[str],
                     bounds: dict[str, tuple[float, float]] | None = None) -> dict[str, tuple[float, float]]:
    """``{name: (min, max)}`` (edge units) for the fitted ``names``: the rows of
    `fits.parameters.PARAMETER_TABLE`, replaced by ``bounds`` where given
    (`fits.parameters.parameter_bounds`; its errors for unknown names, bounds of a parameter
    this fit does not vary, and pairs that are not min < max).
    """
    return table_bounds(names, bounds, owner="this fit ")


@dataclass
class DomainFit:
    """Result of `fit_domain`.

    Attributes
    ----------
    lattice_constant, lattice_constant_stderr : shared SL lattice constant and its standard error (A).
    disorder_deg, disorder_deg_stderr : shared NC disorder dPhi (FWHM, deg) and its standard error.
    configuration : the configuration with the lower total deviance.
    offsets_deg : (M, 3) in-plane angle, tilt1, tilt2 of each pattern about its start (deg).
    scales : (M, 4) sl_scale, diffuse_scale, al_scale, background (counts).
    orientation_matrix : (M, 3, 3) fitted SL orientations (SL crystal -> lab).
    objective : total Poisson deviance; ``objectives`` the total per configuration tried.
    n_iter : iterations; converged : whether the relative decrease fell below ``tol``.
    offsets_stderr_deg : (M, 3) standard errors of ``offsets_deg`` (deg; inf where unconstrained).
    status : OK, AT_BOUND (converged with a parameter on a bound of `parameter_bounds`) or
        NOT_CONVERGED (`fits.status.FitStatus`).
    """

    lattice_constant: float
    lattice_constant_stderr: float
    disorder_deg: float
    disorder_deg_stderr: float
    configuration: str
    offsets_deg: np.ndarray
    scales: np.ndarray
    orientation_matrix: np.ndarray
    objective: float
    objectives: dict
    n_iter: int
    converged: bool
    status: FitStatus = FitStatus.OK
    offsets_stderr_deg: np.ndarray | None = None


def _build_blocks(model, names):
    residual = residual_function(model, names, "deviance")

    def one(arrays, x, template, observed, weight):
        r = residual(arrays, x, template, observed, weight)
        return r, r

    def blocks(arrays, x, template, observed, weight):
        jac, r = jax.jacfwd(one, argnums=1, has_aux=True)(arrays, x, template, observed, weight)
        return r, jac

    return jax.jit(jax.vmap(blocks, in_axes=(None, 0, 0, 0, 0)))


def _solve_one(model, observed, weight, init: ModelParams, max_iter: int, tol: float,
               bounds: dict[str, tuple[float, float]]):
    names = SHARED + LOCAL
    run = compiled(model, ("domain_blocks", names), _build_blocks)
    _, arrays = intensity_function(model)
    M = observed.shape[0]
    x0 = np.asarray(pack(init, names), np.float64)                      # (M, 9)
    shared = np.mean(x0[:, :2], axis=0)
    local = x0[:, 2:].copy()
    n = 2 + 7 * M
    lo = np.concatenate([[bounds[k][0] for k in SHARED], np.tile([bounds[k][0] for k in LOCAL], M)])
    hi = np.concatenate([[bounds[k][1] for k in SHARED], np.tile([bounds[k][1] for k in LOCAL], M)])
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    obs_j, w_j = jnp.asarray(observed, dtype), jnp.asarray(weight, dtype)

    def evaluate(vec):
        x = np.concatenate([np.broadcast_to(vec[:2], (M, 2)), vec[2:].reshape(M, 7)], axis=1)
        r, jac = run(arrays, jnp.asarray(x, dtype), init, obs_j, w_j)
        r, jac = np.asarray(r, np.float64), np.asarray(jac, np.float64)     # (M, P), (M, P, 9)
        A = np.zeros((n, n))
        g = np.zeros(n)
        for m in range(M):
            idx = np.r_[0, 1, 2 + 7 * m: 9 + 7 * m]
            A[np.ix_(idx, idx)] += jac[m].T @ jac[m]
            g[idx] += jac[m].T @ r[m]
        return float(np.sum(r * r)), A, g

    vec = np.concatenate([shared, local.reshape(-1)])
    vec = np.clip(vec, lo, hi)
    cost, A, g = evaluate(vec)
    lam, it, converged = 1e-3, 0, False
    while it < max_iter:
        it += 1
        d = np.diag(A)
        s = np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), 0.0)
        As = A * s[:, None] * s[None, :] + lam * np.eye(n) + np.diag(np.where(s > 0, 0.0, 1.0))
        step = s * np.linalg.solve(As, -s * g)
        trial = np.clip(vec + step, lo, hi)
        c1, A1, g1 = evaluate(trial)
        if np.isfinite(c1) and c1 < cost:
            small = cost - c1 <= tol * max(cost, 1.0)
            vec, cost, A, g = trial, c1, A1, g1
            lam = max(lam / 3.0, 1e-12)
            if small:
                converged = True
                break
        else:
            lam *= 4.0
            if lam > 1e10:
                converged = True
                break
    d = np.diag(A)
    s = np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), 0.0)
    try:
        cov = np.linalg.inv(A * s[:, None] * s[None, :] + np.diag(np.where(s > 0, 0.0, 1.0))) * np.outer(s, s)
        var = np.diag(cov)
        # a parameter the data do not constrain (zero Jacobian column) has no error bar: inf, not 0
        err = np.where((d > 0) & np.isfinite(var) & (var > 0), np.sqrt(np.where(var > 0, var, 1.0)), np.inf)
    except np.linalg.LinAlgError:
        err = np.full(n, np.inf)
    x = np.concatenate([np.broadcast_to(vec[:2], (M, 2)), vec[2:].reshape(M, 7)], axis=1)
    at_bound = bool(np.any((vec <= lo) | (vec >= hi)))
    return x, err, cost, it, converged, at_bound


def fit_domain(observed: np.ndarray, weight: np.ndarray, model, init: ModelParams,
               configurations: dict[str, np.ndarray] | None = None, *, max_iter: int = 30,
               tol: float = 1e-7, bounds: dict[str, tuple[float, float]] | None = None) -> DomainFit:
    """Joint fit of M patterns of one domain: shared a and disorder, per-pattern offsets and scales.

    Parameters
    ----------
    observed : (M, P) mean counts per point in the model's point order
        (``polar.reshape(M, -1)[:, setup.index]`` for a `fits.scan.setup.FitSetup`), 0 where
        invalid.
    weight : (M, P) pixels per point, 0 where invalid.
    model : orientation-free `PatternModel` on those points (`fits.scan.setup.FitSetup.model`).
    init : stacked `ModelParams` (leading axis M), e.g. the per-pattern fits; each pattern's
        orientation is held in ``base_orientation`` with inplane, tilt1, tilt2 as offsets.
    configurations : name -> ``R_or`` (3, 3) tried (default: only ``init``'s relationship, named
        "init"); the lower total deviance decides.
    max_iter, tol : Levenberg-Marquardt iterations and relative decrease for convergence.
    bounds : ``{name: (min, max)}`` (edge units) replacing the table's bounds of a name in
        `SHARED` or `LOCAL` (`parameter_bounds`); the offsets inplane/tilt are bounded per pattern.
        Keep ``lattice_constant`` inside the range the model was built for
        (``FitSetup.a_range`` for a `fits.scan.setup.FitSetup`).

    Returns
    -------
    DomainFit

    Raises
    ------
    ValueError
        For shapes that do not match the model or ``init``, or bad ``bounds``.

    Notes
    -----
    Levenberg-Marquardt with Marquardt scaling on the Poisson deviance residuals (Moré 1978,
    doi:10.1007/BFb0067700; `fits.objective.deviance_residuals`), the normal equations
    assembled from per-pattern Jacobian blocks (a bundle-adjustment "arrow" structure,
    Triggs et al. 2000, doi:10.1007/3-540-44480-7_21); every parameter is clipped into its bounds
    from `fits.parameters.PARAMETER_TABLE` (projected LM).
    Standard errors from the inverse of ``J^T J`` (the Fisher information of the deviance).

    Validation: recovers the shared a and disorder of forward-model patterns with different
    orientations and scales (tests/fits/test_domain_fit.py).
    """
    observed = np.asarray(observed, np.float64)
    weight = np.asarray(weight, np.float64)
    if observed.ndim != 2 or observed.shape != weight.shape or observed.shape[1] != model.pixels.size:
        raise ValueError(f"observed {observed.shape} and weight {weight.shape} must both be (M, {model.pixels.size}) "
                         f"(patterns x model points); select the model's points with setup.index.")
    M = observed.shape[0]
    if np.shape(init.lattice_constant) != (M,):
        raise ValueError(f"init holds parameters of shape {np.shape(init.lattice_constant)}; stack one ModelParams "
                         f"per pattern (leading axis {M}).")
    limits = parameter_bounds(SHARED + LOCAL, bounds)
    confs = configurations or {"init": None}
    best, tried = None, {}
    for name, rel in confs.items():
        p0 = init if rel is None else init.replace(
            relationship=jnp.broadcast_to(jnp.asarray(rel, init.relationship.dtype), init.relationship.shape))
        x, err, cost, it, conv, at_bound = _solve_one(model, observed, weight, p0, max_iter, tol, limits)
        tried[name] = cost
        if best is None or cost < best[3]:
            best = (name, p0, x, cost, err, it, conv, at_bound)
    name, p0, x, cost, err, it, conv, at_bound = best
    status = FitStatus.NOT_CONVERGED if not conv else FitStatus.AT_BOUND if at_bound else FitStatus.OK
    params = unpack(jnp.asarray(x), SHARED + LOCAL, p0)
    rot = np.asarray(jax.vmap(lambda p: p.sl_orientation())(params), np.float64)
    return DomainFit(lattice_constant=float(x[0, 0]), lattice_constant_stderr=float(err[0]),
                     disorder_deg=float(x[0, 1]), disorder_deg_stderr=float(err[1]), configuration=name,
                     offsets_deg=x[:, 2:5].copy(), scales=x[:, 5:9].copy(), orientation_matrix=rot,
                     objective=float(cost), objectives=tried, n_iter=int(it), converged=bool(conv),
                     status=status, offsets_stderr_deg=np.asarray(err[2:]).reshape(M, 7)[:, :3].copy())


def domain_init(fits: dict[str, np.ndarray], rows: np.ndarray, template: ModelParams) -> ModelParams:
    """Stacked starting parameters of `fit_domain` from per-pattern fits (`fits.scan.results.read_fits`).

    ``rows`` are the scan points of the domain; their fitted orientation goes into
    ``base_orientation`` (offsets 0), a, scales and disorder are the fitted ones (the domain
    median where a pattern has none), the configuration the majority one.
    """
    rows = np.asarray(rows, int)
    conf = [c for c in np.asarray(fits["configuration"])[rows] if c]
    rel = orientation.orientation_relationship(max(set(conf), key=conf.count)) if conf else template.relationship
    dis = np.asarray(fits["disorder_deg"], float)[rows]
    dis_med = np.nanmedian(dis) if np.isfinite(dis).any() else float(np.degrees(template.disorder)) * FWHM_PER_SIGMA
    ps = []
    for i in rows:
        d = fits["disorder_deg"][i] if np.isfinite(fits["disorder_deg"][i]) else dis_med
        ps.append(template.replace(
            base_orientation=jnp.asarray(fits["orientation_matrix"][i], template.base_orientation.dtype),
            inplane=0.0, tilt1=0.0, tilt2=0.0, lattice_constant=float(fits["lattice_constant"][i]),
            sl_scale=float(fits["sl_scale"][i]), diffuse_scale=float(fits["diffuse_scale"][i]),
            al_scale=max(float(fits["al_scale"][i]), 1e-3), background=float(fits["background"][i]),
            disorder=float(np.radians(d) / FWHM_PER_SIGMA), relationship=rel))
    return jax.tree_util.tree_map(lambda *x: jnp.stack([jnp.asarray(v) for v in x]), *ps)


def fit_domain_average(observed: np.ndarray, weight: np.ndarray, model, init: ModelParams,
                       vary: tuple[str, ...] | None = None, max_iter: int = 50,
                       bounds: dict[str, tuple[float, float]] | None = None):
    """Fit the mean of M patterns of a domain as one pattern (`fits.batch.fit_batch`).

    Parameters
    ----------
    observed, weight : (M, P) as for `fit_domain`.
    init : one `ModelParams` (unstacked), e.g. the first pattern's fit.
    vary : fitted names (default `fits.scan.settings.DEFAULT_VARY`).
    bounds : ``{name: (min, max)}`` (edge units) replacing the table's bounds of a varying name;
        every varying name is passed to `fits.batch.fit_batch` with its bounds
        (`parameter_bounds`). Keep ``lattice_constant`` inside the model's range.

    Returns
    -------
    fits.batch.BatchFit of one frame.

    Raises
    ------
    ValueError, KeyError
        For bad ``vary`` names or ``bounds`` (`parameter_bounds`).

    Notes
    -----
    The mean of M bin means is a bin mean over ``sum_m n_m`` pixels, so its weight is the sum of
    the weights (Poisson; `fits.objective`). Averaging blurs orientation differences inside the
    domain into the peak widths (the "domain-averaged pattern").
    """
    observed = np.asarray(observed, np.float64)
    weight = np.asarray(weight, np.float64)
    wsum = weight.sum(axis=0)
    mean = np.where(wsum > 0, (observed * weight).sum(axis=0) / np.where(wsum > 0, wsum, 1.0), 0.0)
    names = tuple(vary or DEFAULT_VARY)
    return fit_batch(mean[None], wsum[None], model, init, list(names), max_iter=max_iter,
                     bounds=parameter_bounds(names, bounds))
