"""Fisher information of the Poisson likelihood of one pattern and its Cramer-Rao bounds.

For points ``p`` with expected count per pixel ``m_p(theta)`` standing for ``w_p`` pixels
(`fits.study.grid`), the counts summed over a point are Poisson with mean ``w_p m_p``, and the
Fisher information of the fit parameters ``theta`` (edge units, `fits.parameters`) is

    F_ij = sum_p w_p (d m_p / d theta_i) (d m_p / d theta_j) / m_p

(the Poisson case of the exponential-family Fisher information, e.g. Kay, Fundamentals of
Statistical Signal Processing I, 1993, Eq. 3.31 with the Poisson log-likelihood; the same
``J^T W J`` that Levenberg-Marquardt on deviance residuals builds, `fits.batch`).

Bounds (Cramer 1946; Rao 1945; Kay 1993, Theorem 3.1):

* marginal (every other parameter free): ``sqrt((F^-1)_ii)``;
* conditional (every other parameter fixed at its true value): ``1 / sqrt(F_ii)``.

Identifiability is judged on the scale-free matrix ``C = D F D``, ``D = diag(F)^-1/2`` (unit
diagonal): an eigenvalue ``lambda`` of ``C`` means that the combination along its eigenvector
is ``1 / sqrt(lambda)`` times worse determined than if its parameters were alone, so directions
with ``1 / lambda > UNIDENTIFIABLE_INFLATION`` are reported as parameters that trade off. The
condition number reported is that of ``C`` (independent of the units of the parameters).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from fits.objective import MODEL_FLOOR, compiled, intensity_function
from fits.parameters import check_names, pack, unpack
from xmodel.parameters import ModelParams
from xmodel.pattern import PatternModel

#: a direction whose variance is inflated more than this (bound 100x its conditional one) by
#: correlations is reported as not identifiable
UNIDENTIFIABLE_INFLATION = 1.0e4
#: eigenvector components below this (of a unit vector) are not named in a trade-off message
NAMED_COMPONENT = 0.2
#: a parameter takes part in an exactly singular direction when its component exceeds this
NULL_COMPONENT = 1e-8


def _build_jacobian(model: PatternModel, names: tuple[str, ...]):
    fn, _ = intensity_function(model)

    def intensities(vector, arrays, template):
        return fn(arrays, unpack(vector, names, template))

    return jax.jit(lambda v, arrays, t: (intensities(v, arrays, t), jax.jacfwd(intensities)(v, arrays, t)))


def model_jacobian(model: PatternModel, params: ModelParams, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Expected counts ``m`` (P,) and ``d m / d theta`` (P, n) at ``params`` (edge units of ``names``).

    Forward mode (`jax.jacfwd`) through the forward model; the dtype is the model's (build it
    in float64 for precise bounds). Validation: against central differences of two simulated
    images (tests/fits/study/test_study_fisher.py).
    """
    names = check_names(names)
    _, arrays = intensity_function(model)
    run = compiled(model, ("study_jacobian", names), _build_jacobian)
    dtype = arrays["weight"].dtype
    vector = jnp.asarray(np.asarray(pack(params, names), np.float64), dtype)
    m, jac = run(vector, arrays, params)
    return np.asarray(m, np.float64), np.asarray(jac, np.float64)


def fisher_matrix(model_counts: np.ndarray, jacobian: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``F = sum_p w_p J_p J_p^T / m_p`` (n, n) over the points with ``w_p > 0``.

    Parameters
    ----------
    model_counts : (P,) expected counts per pixel ``m_p`` (counts).
    jacobian : (P, n) ``d m_p / d theta`` (counts per edge unit).
    weight : (P,) pixels per point ``w_p`` (0 where masked).

    Notes
    -----
    Module docstring; ``m_p`` is floored at `fits.objective.MODEL_FLOOR` as in the objectives.
    """
    m = np.maximum(np.asarray(model_counts, np.float64), MODEL_FLOOR)
    w = np.asarray(weight, np.float64)
    use = w > 0
    a = np.asarray(jacobian, np.float64)[use] * np.sqrt(w[use] / m[use])[:, None]
    return a.T @ a


def pointwise_fisher(model_counts: np.ndarray, jacobian: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(P, n) diagonal Fisher contribution of every point, ``w_p (d m_p / d theta_i)^2 / m_p``."""
    m = np.maximum(np.asarray(model_counts, np.float64), MODEL_FLOOR)
    w = np.asarray(weight, np.float64)
    return np.where((w > 0)[:, None], w[:, None] * np.asarray(jacobian, np.float64) ** 2 / m[:, None], 0.0)


@dataclass(frozen=True)
class FisherAnalysis:
    """Bounds and identifiability from one Fisher matrix (edge units of ``names``).

    Attributes
    ----------
    names : the parameters, in the order of every array.
    fisher : (n, n) Fisher information.
    crlb : (n,) marginal Cramer-Rao bound ``sqrt((F^-1)_ii)`` (``inf`` for a parameter without
        effect or in an exactly singular direction).
    crlb_conditional : (n,) ``1 / sqrt(F_ii)`` (``inf`` without effect).
    correlation : (n, n) correlation matrix of ``F^-1`` (NaN rows for parameters without effect).
    condition_number : condition number of the scale-free matrix ``D F D`` (module docstring),
        over the parameters with an effect.
    no_effect : names whose derivative vanishes at every point.
    unidentifiable : sentences naming the parameters without effect and the combinations that
        trade off.
    """

    names: tuple[str, ...]
    fisher: np.ndarray
    crlb: np.ndarray
    crlb_conditional: np.ndarray
    correlation: np.ndarray
    condition_number: float
    no_effect: tuple[str, ...]
    unidentifiable: tuple[str, ...]


def _combination(vec: np.ndarray, names: Sequence[str]) -> str:
    lead = [i for i in range(vec.size) if abs(vec[i]) >= NAMED_COMPONENT] or [int(np.argmax(np.abs(vec)))]
    sign = np.sign(vec[lead[0]])
    return " ".join(f"{'+' if sign * vec[i] >= 0 else '-'} {abs(vec[i]):.2f} {names[i]}"
                    for i in lead).lstrip("+ ")


def _join(words: Sequence[str]) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def analyse_fisher(fisher: np.ndarray, names: Sequence[str]) -> FisherAnalysis:
    """Marginal and conditional bounds, correlations and identifiability of ``fisher``.

    Parameters
    ----------
    fisher : (n, n) Fisher information in edge units of ``names``.
    names : parameter names (`fits.parameters`).

    Notes
    -----
    A parameter has no effect when ``F_ii`` is not finite and positive (its derivative is 0 at
    every point, e.g. the disorder when ``al_scale`` is 0). The others are analysed through the
    eigen-decomposition of ``C = D F D`` (module docstring): ``F^-1 = D V diag(1/lambda) V^T D``.
    """
    names = tuple(names)
    f = np.asarray(fisher, np.float64)
    n = len(names)
    diag = np.diag(f).copy()
    effect = np.isfinite(diag) & (diag > 1e-300)
    no_effect = tuple(nm for nm, e in zip(names, effect) if not e)
    cond = np.full(n, np.inf)
    cond[effect] = 1.0 / np.sqrt(diag[effect])
    crlb = np.full(n, np.inf)
    corr = np.full((n, n), np.nan)
    messages = [f"{nm} has no effect on the pattern on this grid (d I / d {nm} = 0 at every point): it cannot "
                "be measured; fix it or change the experiment" for nm in no_effect]
    idx = np.flatnonzero(effect)
    condition = np.inf if no_effect else 1.0
    if idx.size:
        d = 1.0 / np.sqrt(diag[idx])
        c = f[np.ix_(idx, idx)] * d[:, None] * d[None, :]
        lam, vec = np.linalg.eigh(0.5 * (c + c.T))
        lam_max = float(lam.max())
        tiny = lam_max * 1e-15
        if not no_effect:
            condition = float(lam_max / lam.min()) if lam.min() > tiny else np.inf
        inv_lam = np.where(lam > tiny, 1.0 / np.where(lam > tiny, lam, 1.0), np.inf)
        with np.errstate(invalid="ignore"):
            # a parameter is unbounded by a null direction only if it takes part in it (rounding
            # leaves components of about 1e-16 of the others in the eigenvector)
            part = np.abs(vec) > NULL_COMPONENT
            var_c = np.array([np.sum(np.where(np.isfinite(inv_lam), vec[i] ** 2 * np.where(np.isfinite(inv_lam),
                                                                                         inv_lam, 0.0),
                                              np.where(part[i], np.inf, 0.0))) for i in range(idx.size)])
            crlb[idx] = np.sqrt(var_c) * d
            cov_c = (vec * np.where(np.isfinite(inv_lam), inv_lam, 1.0 / tiny)) @ vec.T
            s = np.sqrt(np.diag(cov_c))
            corr[np.ix_(idx, idx)] = cov_c / s[:, None] / s[None, :]
        sub = [names[i] for i in idx]
        for k in np.argsort(lam):
            if 1.0 / max(lam[k], 1e-300) <= UNIDENTIFIABLE_INFLATION:
                break
            v = vec[:, k]
            who = [sub[i] for i in range(v.size) if abs(v[i]) >= NAMED_COMPONENT]      # in the study's order
            how = "is not determined at all" if lam[k] <= tiny else \
                f"is determined {1.0 / np.sqrt(lam[k]):.3g} times worse than if each were fitted alone"
            if len(who) < 2:
                messages.append(f"{who[0] if who else sub[int(np.argmax(np.abs(v)))]} is not identifiable: "
                                f"the combination {_combination(v, sub)} (normalised) {how}")
            else:
                messages.append(f"{_join(who)} trade off: the combination {_combination(v, sub)} "
                                f"(each in units of its conditional bound) {how}")
    return FisherAnalysis(names=names, fisher=f, crlb=crlb, crlb_conditional=cond, correlation=corr,
                          condition_number=float(condition), no_effect=no_effect, unidentifiable=tuple(messages))
