"""Cluster-robust (sandwich) covariance: error bars that hold when the model is not exact.

The quasi-likelihood covariance of `fits.batch` (``phi (J^T J)^-1``, McCullagh & Nelder 1989,
sec. 9.2) treats whatever the model leaves unexplained as independent from point to point, with
one dispersion ``phi`` for the whole frame. A misfit of the model is not like that: a peak shape
that differs from the data's leaves residuals of one sign over the whole footprint of a
reflection, tens of bins that move together, and it sits exactly where the orientation and the
lattice constant draw their information. Spread over a frame it raises the dispersion little
(1.7-3.6 on the realistic twin, docs/validation.md) while the errors it causes are 5-8 times the
quasi-likelihood ones there.

The sandwich estimator (Huber 1967; White 1980, doi:10.2307/1912934) measures the spread of the
fit's score instead of assuming it; summing the score over clusters of neighbouring points
before squaring lets the residuals be correlated within a cluster (Liang & Zeger 1986,
doi:10.1093/biomet/73.1.13; Cameron & Miller 2015, doi:10.3368/jhr.50.2.317)::

    C_s = c / (c - 1) A^-1 (sum_k g_k g_k^T) A^-1,   A = J^T J,   g_k = sum_{i in k} J_i r_i

with ``r`` the deviance residuals of the fit, ``J`` their Jacobian and ``c`` the clusters that
hold a point of positive weight (the prior's residuals, `fits.objective.check_prior`, are one
cluster each). For deviance residuals ``D = sum r^2`` has the gradient ``2 J^T r`` and the
Gauss-Newton Hessian ``2 A``, so ``C_s`` is the M-estimator's ``H^-1 V H^-1``; where the model is
right, ``E[r r^T] = I`` and ``C_s`` estimates ``A^-1`` as the Fisher information does.

The clusters are tiles of the polar grid (`tile_clusters`): `TILE_CHI_DEG` along chi by
`TILE_Q` relative in q, about the full width at half maximum of an SL spot of the default model
(2.4 deg along chi for the 1 deg mosaic; 2.7-4.9 % in q for the 0.0015 1/A radial width at the
111 to 220 shells), so that one reflection's misfit falls in one to four tiles while a frame's
SL information still spreads over hundreds of them (the sandwich's own relative noise is about
``sqrt(2 / c_eff)`` for the ``c_eff`` clusters that carry a parameter's information).

A second clustering, whole rings of `RING_Q` relative width in q (`ring_clusters`), catches
what the tiles split: a misfit shared over a shell, such as the shift to lower q that a finite
grain's wide spots show under the falling form factor on every spot of a ring (docs/validation.md,
"Where the lattice-constant bias comes from"), which is where the lattice constant draws its
information. On the realistic twin the lattice constant's pulls have a standard deviation of
1.70 with the tiles and 1.02 with the larger of both (docs/validation.md, "Error bars under
mismatch"); the rings alone leave the angles at 2.2-2.7, the tiles at 1.7-2.0. Each clustering
gives its own sandwich (`sandwich`), and one Jacobian serves both (`score_program`).

No parameter is reported more precise than any estimate says: its variance is the largest of
them, ``C_jj = max(C_q,jj, C_s,jj, ...)``, and the correlations are the quasi-likelihood ones
(``C = S C_q S``, `robust_covariance`). The correlations come from the model's geometry
(``J``), which both share; the sandwich's off-diagonal terms are its noisiest part, and a bound
of both matrices in the Loewner order (``C_q + [C_s - C_q]_+``) widened single parameters' errors
to up to 2.2 times the larger of the two where strongly correlated parameters traded error. On a right
model ``C_s`` scatters about ``C_q`` (tests/fits/test_robust.py, tests/fits/test_batch.py) and
``C`` stays within that scatter above it; under misfit it follows ``C_s``.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fits.objective import Prior, compiled, split_jacobian, split_residual_function
from xmodel.pattern import PatternModel
from xmodel.precision import EXACT

#: tile of the clusters along chi (deg): about an SL spot's FWHM along chi (1 deg mosaic sigma)
TILE_CHI_DEG = 4.0
#: tile of the clusters in q, relative (``dq / q``): about an SL spot's radial FWHM at the first shells
TILE_Q = 0.04
#: width of the whole-ring clusters, relative in q (`ring_clusters`): the tiles' q width
RING_Q = 0.04


def tile_clusters(chi_deg: np.ndarray, q: np.ndarray, index: np.ndarray, tile_chi_deg: float = TILE_CHI_DEG,
                  tile_q: float = TILE_Q) -> np.ndarray:
    """(P,) cluster of every fit point: its tile of ``tile_chi_deg`` along chi by ``tile_q``
    relative in q, numbered 0..c-1 (only tiles that hold a point).

    Parameters
    ----------
    chi_deg : (n_chi,) azimuth of the polar grid's rows (deg).
    q : (n_q,) momentum transfer of its columns (1/A, positive).
    index : (P,) flat row-major (chi, q) indices of the fit points in that grid.
    tile_chi_deg, tile_q : tile size along chi (deg; ``inf``: whole rings, `ring_clusters`) and in
        q (relative: ``log(q)`` in steps of ``log(1 + tile_q)``, so that the tiles follow a
        log-spaced grid and a peak's width).

    Raises
    ------
    ValueError
        For a tile that is not positive (``tile_q`` also finite), a non-positive q or an index
        off the grid.
    """
    chi_deg, q = np.asarray(chi_deg, float).reshape(-1), np.asarray(q, float).reshape(-1)
    index = np.asarray(index, np.int64).reshape(-1)
    if not (np.isfinite(tile_q) and tile_q > 0):
        raise ValueError(f"tile_q = {tile_q!r}: the clusters' tile must be positive and finite in q")
    if not (tile_chi_deg > 0):
        raise ValueError(f"tile_chi_deg = {tile_chi_deg!r}: the clusters' tile must be positive along chi "
                         "(inf: whole rings)")
    if np.any(q <= 0):
        raise ValueError("tile_clusters: q must be positive (the tiles are relative in q)")
    if index.size and (index.min() < 0 or index.max() >= chi_deg.size * q.size):
        raise ValueError(f"tile_clusters: index outside the {chi_deg.size} x {q.size} polar grid")
    row, col = np.divmod(index, q.size)
    t_chi = np.zeros(row.shape, np.int64) if np.isinf(tile_chi_deg) else \
        np.floor((chi_deg[row] - chi_deg.min()) / float(tile_chi_deg)).astype(np.int64)
    t_q = np.floor(np.log(q[col] / q.min()) / np.log1p(float(tile_q))).astype(np.int64)
    _, ids = np.unique(t_chi * (int(t_q.max(initial=0)) + 1) + t_q, return_inverse=True)
    return ids.reshape(-1).astype(np.int64)


def ring_clusters(q: np.ndarray, index: np.ndarray, ring_q: float = RING_Q) -> np.ndarray:
    """(P,) cluster of every fit point: its ring of ``ring_q`` relative width in q, all chi (as
    `tile_clusters` with ``tile_chi_deg = inf``; ``index`` flat row-major (chi, q) indices, so
    the chi grid plays no part)."""
    q = np.asarray(q, float).reshape(-1)
    index = np.asarray(index, np.int64).reshape(-1)
    if index.size and index.min() < 0:
        raise ValueError("ring_clusters: negative index into the polar grid")
    rows = int(index.max(initial=0)) // max(q.size, 1) + 1
    return tile_clusters(np.zeros(rows), q, index, np.inf, ring_q)


def with_prior(clusters: np.ndarray, n_prior: int) -> np.ndarray:
    """(P + K,) the fit points' clusters followed by one new cluster per prior residual; for
    (S, P) clusterings (S, P + K), each row's prior clusters after its own."""
    clusters = np.asarray(clusters, np.int64)
    if clusters.ndim == 2:
        return np.stack([with_prior(row, n_prior) for row in clusters]) if clusters.shape[0] else \
            np.zeros((0, clusters.shape[1] + int(n_prior)), np.int64)
    clusters = clusters.reshape(-1)
    first = int(clusters.max(initial=-1)) + 1
    return np.concatenate([clusters, first + np.arange(int(n_prior), dtype=np.int64)])


def occupied(clusters: np.ndarray, weight: np.ndarray, n_prior: int = 0) -> int:
    """Clusters that hold a point of positive ``weight`` (plus the ``n_prior`` prior residuals'):
    the ``c`` of the small-sample factor ``c / (c - 1)``."""
    clusters = np.asarray(clusters).reshape(-1)
    return int(np.unique(clusters[np.asarray(weight).reshape(-1) > 0]).size) + int(n_prior)


def _build_scores(model: PatternModel, names: tuple[str, ...], kind: str, prior: Prior, n_clusters: tuple[int, ...]):
    split, groups = split_residual_function(model, names, kind, prior)

    def frame(arrays, x, template, observed, weight, clusters):
        jac, r = split_jacobian(lambda a, b: split(arrays, a, b, template, observed, weight), x, *groups)
        score = jac * r[:, None]
        gs = [jax.ops.segment_sum(score, clusters[s], num_segments=n) for s, n in enumerate(n_clusters)]
        return jnp.matmul(jac.T, jac, precision=EXACT), jnp.stack([jnp.matmul(g.T, g, precision=EXACT) for g in gs])

    return jax.jit(frame)


def score_program(model: PatternModel, names: Sequence[str], kind: str, prior: Prior, n_clusters: Sequence[int]):
    """Jitted ``(arrays, x, template, observed, weight, clusters) -> (A, B)`` of one frame: the
    information ``A = J^T J`` and, for each of the S clusterings, the clustered score product
    ``B_s = sum_k g_k g_k^T`` at ``x`` (edge units; ``clusters`` (S, P + K) of `with_prior`,
    ``n_clusters`` one count above each row's largest entry; ``B`` has shape (S, n, n)), made
    once per model and key (`fits.objective.compiled`); one Jacobian serves every clustering."""
    return compiled(model, ("robust", tuple(names), kind, prior, tuple(int(n) for n in n_clusters)), _build_scores)


def sandwich(information: np.ndarray, scores: np.ndarray, n_clusters: int) -> np.ndarray:
    """(n, n) ``c / (c - 1) A^-1 B A^-1`` (module docstring); NaN where ``A`` is singular or
    fewer than two clusters hold data."""
    a = np.asarray(information, np.float64)
    n = a.shape[0]
    if n_clusters < 2 or not np.all(np.isfinite(a)) or not np.all(np.isfinite(scores)):
        return np.full((n, n), np.nan)
    d = np.diag(a)
    if np.any(d <= 0):
        return np.full((n, n), np.nan)
    s = 1.0 / np.sqrt(d)
    try:
        inv = np.linalg.inv(a * s[:, None] * s[None, :]) * s[:, None] * s[None, :]
    except np.linalg.LinAlgError:
        return np.full((n, n), np.nan)
    c = float(n_clusters)
    out = inv @ np.asarray(scores, np.float64) @ inv * (c / (c - 1.0))
    return 0.5 * (out + out.T)


def robust_covariance(quasi: np.ndarray, sand: np.ndarray) -> np.ndarray:
    """``S C_q S``, ``S = diag(sqrt(max(1, C_s,jj / C_q,jj)))`` (module docstring): every
    parameter's variance the larger of the quasi-likelihood's and the sandwich's, the correlations
    the quasi-likelihood's.

    Parameters
    ----------
    quasi : (n, n) the quasi-likelihood covariance (`fits.batch.covariance_scale` applied; NaN
        rows and columns where a direction is not determined).
    sand : (n, n) the sandwich (`sandwich`; NaN: unknown, ``quasi`` is returned).

    Returns
    -------
    (n, n) covariance, positive semi-definite where ``quasi`` is; parameters ``quasi`` leaves
    undetermined stay so.
    """
    q = np.asarray(quasi, np.float64)
    dq, ds = np.diag(q), np.diag(np.asarray(sand, np.float64))
    use = np.isfinite(dq) & (dq > 0) & np.isfinite(ds)
    f = np.ones(dq.shape)
    f[use] = np.sqrt(np.maximum(1.0, ds[use] / dq[use]))
    return q * f[:, None] * f[None, :]
