"""Linear stage of the scan fit: with the orientation fixed the model is linear in its scales.

`component_images` evaluates the unit-scale terms of `xmodel.pattern.PatternModel` (SL peaks,
isotropic diffuse, AL peaks, background) for a batch of parameter sets, and `linear_scales`
fits their non-negative weights to the observed counts, which ranks template matches and
decides the Conf1/Conf2 relationship variant (`relationship_variants`) before any gradient step
(`fits.scan.frames.fit_frames`).
"""
from __future__ import annotations

import jax
import numpy as np
from scipy.optimize import nnls

from fits.objective import compiled, intensity_function
from xmodel.parameters import ModelParams
from xmodel.pattern import TERMS, PatternModel


def poisson_deviance_np(mu: np.ndarray, y: np.ndarray, valid: np.ndarray, n: np.ndarray | float = 1.0
                         ) -> np.ndarray:
    """Poisson deviance ``2 sum n [y log(y/mu) - (y - mu)]`` over the last axis (numpy): valid points,
    ``n`` pixels per point (McCullagh & Nelder 1989; `fits.objective.poisson_deviance`).

    ``mu`` is floored at 1e-6. Evaluated as ``2 [sum n (y log y - y) - sum n y log mu + sum n mu]``:
    the data's part on the data's shape (``y``, ``valid`` and ``n`` may broadcast against leading
    axes of ``mu``, e.g. the variants of `variant_scales`), and one logarithm per model value.
    Equal to the direct sum to about 1e-12 of ``sum n y log y`` (a few 1e-6 deviance units for a
    full frame; tests/fits/scan/test_linear.py). A NaN model value counts only where its datum
    is used (NaN deviance), as in the direct sum.
    """
    mu = np.maximum(mu, 1e-6)
    valid = np.asarray(valid, bool)
    nu = np.where(valid, n, 0.0)                                   # pixels of the used points
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(nu > 0, y, 0.0)
        ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0)), 0.0)
    if not valid.all():                  # a model value where no datum is used counts for nothing
        mu = np.where(nu > 0, mu, 1.0)
    data = np.sum(nu * (ylogy - y), axis=-1)
    return 2.0 * (data - np.einsum("...p,...p->...", nu * y, np.log(mu)) + np.einsum("...p,...p->...", nu, mu))



def poisson_deviance_gain(mu_without: np.ndarray, mu_with: np.ndarray, y: np.ndarray, valid: np.ndarray,
                          n: np.ndarray | float = 1.0) -> np.ndarray:
    """Deviance gain ``D(mu_without) - D(mu_with)`` over the last axis, taken point by point (numpy).

    ``2 sum n [y log(mu_with / mu_without) + mu_without - mu_with]`` over the valid points (the
    data's part of the two deviances cancels exactly; McCullagh & Nelder 1989, the Poisson
    deviance of `poisson_deviance_np`, whose floor of 1e-6 on the model it shares). The gain of a
    term is a difference of two deviances; taken as the difference of two sums it loses every
    digit where both are large: a model value of 1e14 at one point puts both near 1e19, where
    float64 resolves 2048 deviance units, and the difference of the sums is rounding noise. Here
    each point's difference is formed first.
    """
    a = np.maximum(mu_without, 1e-6)
    b = np.maximum(mu_with, 1e-6)
    valid = np.asarray(valid, bool)
    nu = np.where(valid, n, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(nu > 0, y, 0.0)
        term = np.where(y > 0, y * np.log(b / a), 0.0) + (a - b)
    return 2.0 * np.sum(np.where(nu > 0, nu * term, 0.0), axis=-1)

#: the terms the model is linear in (`xmodel.pattern.TERMS`), in the order of `component_images`
COMPONENTS = TERMS
#: rows of `component_images` evaluated at once (memory: rows x parts x fit points x 4 bytes)
COMPONENT_CHUNK = 64


def _build_components(model: PatternModel, parts: tuple[str, ...], treedef, batched: tuple[bool, ...]):
    """Jitted ``(arrays, varying leaves, fixed leaves) -> (B, len(parts), P)``: one row at a time
    (`jax.lax.map`; a `jax.vmap` of the windowed SL term batches its gathers and scatters, 2-3 times
    slower on a CPU), the fixed leaves shared by all rows."""
    comp = model.components(parts)

    def row(arrays, varying, fixed):
        it_v, it_f = iter(varying), iter(fixed)
        return comp(arrays, jax.tree_util.tree_unflatten(treedef, [next(it_v) if b else next(it_f) for b in batched]))

    return jax.jit(lambda arrays, varying, fixed: jax.lax.map(lambda v: row(arrays, v, fixed), varying))


def component_images(model: PatternModel, params: ModelParams, parts: tuple[str, ...] = COMPONENTS) -> np.ndarray:
    """(B, len(parts), P) model components with unit scales (default: SL peaks, diffuse, AL, background).

    ``params`` is a stacked batch; each component is the model with its own scale 1 and the
    other three 0 (the model is linear in them, `xmodel.pattern.PatternModel.components`);
    ``parts`` names the scales (`COMPONENTS`) whose terms are computed (one pass for all). The
    batch is evaluated in chunks of `COMPONENT_CHUNK` rows, each padded to a power of two of at
    least 8, so that a scan compiles at most four shapes per ``parts``. Parameters equal in every
    row (the form factor's radius and width, the peak widths, ...) are passed once, so that what
    depends on them alone (the form-factor table) is computed once per chunk.
    """
    parts = tuple(parts)
    unknown = [c for c in parts if c not in COMPONENTS]
    if unknown:
        raise ValueError(f"component_images: unknown parts {unknown}; valid are {COMPONENTS}.")
    b = int(np.shape(params.sl_scale)[0])
    leaves, treedef = jax.tree_util.tree_flatten(jax.tree_util.tree_map(np.asarray, params))
    batched = [bool(not np.all(x == x[:1])) for x in leaves]             # every leaf has the leading axis b
    batched[0] = True                                                      # rows to map over even if all equal
    batched = tuple(batched)
    run = compiled(model, ("components", parts, treedef, batched), _build_components)
    _, arrays = intensity_function(model)
    out = []
    for s0 in range(0, b, COMPONENT_CHUNK):
        m = min(COMPONENT_CHUNK, b - s0)
        n = max(8, 1 << (m - 1).bit_length())
        rows = np.minimum(np.arange(s0, s0 + n), s0 + m - 1)         # padding repeats the last row
        varying = [x[rows] for x, v in zip(leaves, batched) if v]
        fixed = [x[0] for x, v in zip(leaves, batched) if not v]
        out.append(np.asarray(run(arrays, varying, fixed), np.float64)[:m])
    return np.concatenate(out) if out else np.zeros((0, len(parts), model.pixels.size))


def linear_scales(components: np.ndarray, observed: np.ndarray, valid: np.ndarray,
                  weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative scales (B, 4) and the Poisson deviance (B,) of ``sum_j c_j component_j``.

    Parameters
    ----------
    components : (B, 4, P) unit-scale model components (`component_images`), counts per pixel.
    observed : (B, P) mean counts per pixel of each point (0 where invalid).
    valid : (B, P) bool.
    weight : (B, P) or (P,) pixels per point (``/entry/reduction/counts``); default 1.

    Notes
    -----
    Weighted least squares with the Pearson weight ``n / max(y, 1/n)`` (a bin mean of ``n``
    Poisson pixels has variance ``mu / n``), solved by NNLS (Lawson & Hanson,
    doi:10.1137/1.9781611971217); the deviance is ``2 sum n [y log(y/mu) - (y - mu)]``
    (`fits.objective.poisson_deviance`). The NNLS runs on the k x k normal equations:
    with the Gram matrix ``G = A^T A = L L^T`` (columns of ``A`` scaled to unit norm, Cholesky),
    ``|A x - b|^2 = |L^T x - L^-1 A^T b|^2 + const``, the same minimiser as NNLS on the (P, k)
    system at a cost of O(P k^2) once instead of per NNLS iteration (10x faster for P ~ 5e4).

    Validation: the scales and deviances of the full (P, k) NNLS to 1e-6 relative, also with a
    zero component (tests/fits/scan/test_linear.py).
    """
    n, use, y, w2 = _pearson_weights(observed, valid, weight)
    cw = components * w2[:, None, :]
    G = np.stack([cw[b] @ components[b].T for b in range(observed.shape[0])]) if observed.shape[0] else \
        np.zeros((0, components.shape[1], components.shape[1]))                           # A^T A
    c = np.einsum("bip,bp->bi", cw, y)                                                        # A^T b
    scales = _nnls_normal(G, c, use.any(axis=1))
    mu = np.einsum("bj,bjp->bp", scales, components)
    return scales, poisson_deviance_np(mu, np.nan_to_num(observed), use, n)


def variant_scales(base: np.ndarray, al: np.ndarray, observed: np.ndarray, valid: np.ndarray,
                   weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`linear_scales` of every AL variant at once: scales (V, B, 4) and deviances (V, B).

    Parameters
    ----------
    base : (B, 3, P) unit-scale SL peaks, diffuse and background terms (`component_images` with
        ``("sl_scale", "diffuse_scale", "background")``), shared by the variants.
    al : (V, B, P) the AL term of each variant (e.g. each `xmodel.orientation.relationship_variants`
        of the NC orientation), counts per pixel.
    observed, valid, weight : as `linear_scales`.

    Notes
    -----
    Row ``v`` equals `linear_scales` of the components ``(sl, diffuse, al[v], background)``
    (the scales in `COMPONENTS` order): the same weighted normal equations, NNLS and deviance,
    with the base terms' part of the Gram matrix and of ``A^T b`` computed once for all variants
    instead of once per variant. Validation: equal to `linear_scales` per variant to 1e-9
    relative (tests/fits/scan/test_linear.py).
    """
    V, B = al.shape[0], observed.shape[0]
    n, use, y, w2 = _pearson_weights(observed, valid, weight)
    bw = base * w2[:, None, :]
    G3 = np.stack([bw[b] @ base[b].T for b in range(B)]) if B else np.zeros((0, 3, 3))     # (B, 3, 3)
    c3 = np.einsum("bip,bp->bi", bw, y)                                                     # (B, 3)
    aw = al * w2[None]
    cross = np.einsum("vbp,bkp->vbk", aw, base)                                             # (V, B, 3)
    G = np.zeros((V, B, 4, 4))
    order = [0, 1, 3]                          # base terms in COMPONENTS order (sl, diffuse, -, background)
    G[:, :, np.ix_(order, order)[0], np.ix_(order, order)[1]] = G3[None]
    G[:, :, order, 2] = cross
    G[:, :, 2, order] = cross
    G[:, :, 2, 2] = np.einsum("vbp,vbp->vb", aw, al)
    c = np.zeros((V, B, 4))
    c[:, :, order] = c3[None]
    c[:, :, 2] = np.einsum("vbp,bp->vb", aw, y)
    scales = _nnls_normal(G.reshape(V * B, 4, 4), c.reshape(V * B, 4), np.tile(use.any(axis=1), V)).reshape(V, B, 4)
    mu = np.einsum("vbj,bjp->vbp", scales[:, :, order], base) + scales[:, :, 2:3] * al
    dev = poisson_deviance_np(mu, np.nan_to_num(observed)[None], use[None], n[None])
    return scales, dev


def _pearson_weights(observed: np.ndarray, valid: np.ndarray, weight: np.ndarray | None):
    """Pixels per point ``n``, used points, observations (0 where unused) and the squared Pearson
    weights ``n / max(y, 1/n)`` of `linear_scales`."""
    n = np.ones_like(observed) if weight is None else np.broadcast_to(np.asarray(weight, float), observed.shape)
    use = valid & (n > 0)
    y = np.where(use, np.nan_to_num(observed), 0.0)
    w2 = np.where(use, n / np.maximum(y, 1.0 / np.where(use, n, 1.0)), 0.0)        # squared Pearson weights
    return n, use, y, w2


def _nnls_normal(G: np.ndarray, c: np.ndarray, has: np.ndarray) -> np.ndarray:
    """Non-negative ``x`` (B, k) minimising ``|A x - b|^2`` from ``G = A^T A`` (B, k, k) and
    ``c = A^T b`` (B, k) (`linear_scales`, Notes); 0 where ``has`` (B,) is False."""
    B, k = c.shape
    norm = np.sqrt(np.maximum(np.einsum("bii->bi", G), 0.0))
    norm = np.where(norm > 1e-30, norm, 1.0)
    Gn = G / norm[:, :, None] / norm[:, None, :]
    cn = c / norm
    scales = np.zeros((B, k))
    eye = np.eye(k)
    for b in range(B):
        if not has[b]:
            continue
        try:
            L = np.linalg.cholesky(Gn[b] + 1e-12 * eye)
        except np.linalg.LinAlgError:                      # numerically dependent columns
            L = np.linalg.cholesky(Gn[b] + 1e-8 * eye)
        x, _ = nnls(L.T, np.linalg.solve(L, cn[b]), maxiter=200)
        scales[b] = x / norm[b]
    return scales
