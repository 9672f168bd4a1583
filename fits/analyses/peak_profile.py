"""Gaussian-plus-background fits of radial profiles: the peak position, width and height of one
SL family per scan point (paper Fig. 3a, S7a; `fits.analyses.qmap`), and of each fcc shell in the
comb of `fits.analyses.shell_comb`.

`fit_profiles` runs a vectorised Levenberg-Marquardt over many profiles at once (numpy, no
Python loop over profiles) and never raises for one bad profile: each gets a status
(`fits.status.FitStatus` code: OK, NO_PEAK, PEAK_FIT_FAILED or NO_DATA). `fit_profile` is the
interactive path for one profile with lmfit's
``GaussianModel + LinearModel`` (or ``ConstantModel``), returning lmfit's ``ModelResult``.
"""
from __future__ import annotations

import numpy as np

from fits.analyses.arguments import finite_number, interval, positive_int, q_interval
from fits.status import FitStatus

_OK, _NO_PEAK = FitStatus.OK.code, FitStatus.NO_PEAK.code
_FIT_FAILED, _NO_DATA = FitStatus.PEAK_FIT_FAILED.code, FitStatus.NO_DATA.code

_SQRT2PI = np.sqrt(2.0 * np.pi)
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def _model(x, p):
    """Gaussian (area, centre, sigma) + linear background about the window centre ``x`` = q - qc."""
    A, mu, s, b0, b1 = (p[:, i:i + 1] for i in range(5))
    # rows of failed profiles (width 0 or NaN) give non-finite values; fit_profiles flags them
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        z = (x - mu) / s
        g = np.exp(-0.5 * z * z) / (s * _SQRT2PI)
        f = A * g + b0 + b1 * x
        J = np.stack([g, A * g * z / s, A * g * (z * z - 1.0) / s, np.ones_like(f), np.broadcast_to(x, f.shape)],
                     axis=-1)
    return f, J


def fit_profiles(q: np.ndarray, profiles: np.ndarray, q_window: tuple[float, float], *,
                 background: str = "linear", min_points: int = 8, snr_min: float = 3.0,
                 max_iter: int = 60) -> dict[str, np.ndarray]:
    """Gaussian + background fits of many radial profiles at once (vectorised).

    Parameters
    ----------
    q
        Bin centres, 1/A, shape ``(n_q,)``.
    profiles
        Radial profiles, shape ``(N, n_q)`` (any intensity unit); NaN = empty bin (ignored).
    q_window
        ``(q_lo, q_hi)`` fitted, 1/A.
    background
        ``"linear"`` (LinearModel) or ``"constant"`` (ConstantModel).
    min_points
        Fewer finite bins in the window -> status NO_DATA.
    snr_min
        A fit with ``amplitude < snr_min * amplitude_err``, a non-positive amplitude, a sigma
        below half a bin or above the window width, or a centre outside the window -> status
        NO_PEAK; non-finite parameters or a singular covariance otherwise -> PEAK_FIT_FAILED.
    max_iter
        Levenberg-Marquardt iterations.

    Returns
    -------
    dict of numpy.ndarray, each shape ``(N,)``
        ``center``, ``center_err`` (1/A), ``sigma``, ``sigma_err`` (1/A), ``fwhm`` (1/A),
        ``amplitude``, ``amplitude_err`` (area, as lmfit's GaussianModel), ``height``,
        ``intercept``, ``slope`` (background at ``q`` is ``intercept + slope (q - q_c)``,
        ``q_c`` the window centre), ``redchi``, ``status`` (int8 `fits.status.FitStatus` codes,
        `fits.status.PROFILE_OUTCOMES`). Values are NaN where the status is not OK.

    Notes
    -----
    Levenberg-Marquardt with Marquardt's diagonal scaling (Marquardt 1963,
    doi:10.1137/0111030), one damping per profile; errors from ``(J^T J)^-1`` scaled by the
    reduced chi-square, as lmfit's default ``scale_covar=True``. The Gaussian is lmfit's
    ``GaussianModel`` parametrisation ``A / (sigma sqrt(2 pi)) exp(-(q - mu)^2 / 2 sigma^2)``.

    Validation
    ----------
    Agrees with lmfit's GaussianModel + LinearModel to 1e-6 relative in the centre and 2 %
    in its error on synthetic Poisson profiles; broken profiles get statuses, not
    exceptions (tests/fits/analyses/test_qmap.py).
    """
    if background not in ("linear", "constant"):
        raise ValueError(f"background must be 'linear' or 'constant', got {background!r}.")
    q_window = interval(q_window, "q_window", "--window", unit="1/A", example="0.130,0.160")
    n_par = 5 if background == "linear" else 4
    min_points = positive_int(min_points, "min_points", example="8")
    if min_points <= n_par:
        raise ValueError(f"min_points = {min_points!r}: expected more finite bins than the {n_par} parameters of a "
                         f"Gaussian + {background} background, e.g. 8.")
    snr_min = finite_number(snr_min, "snr_min", ge=0.0, unit="noise sigmas", example="3")
    q = np.asarray(q, float)
    y_all = np.atleast_2d(np.asarray(profiles, float))
    if y_all.shape[-1] != q.size:
        raise ValueError(f"profiles have {y_all.shape[-1]} q bins but q has {q.size}; pass "
                         f"/entry/reduction/radial with its /entry/reduction/q.")
    lo, hi = float(q_window[0]), float(q_window[1])
    sel = (q >= lo) & (q <= hi)
    n = y_all.shape[0]
    out = {k: np.full(n, np.nan) for k in ("center", "center_err", "sigma", "sigma_err", "fwhm", "amplitude",
                                           "amplitude_err", "height", "intercept", "slope", "redchi")}
    status = np.full(n, _NO_DATA, np.int8)
    if np.count_nonzero(sel) < min_points:
        out["status"] = status
        return out
    qc = 0.5 * (lo + hi)
    x = (q[sel] - qc)[None, :]
    y = y_all[:, sel]
    w = np.isfinite(y).astype(float)
    y = np.where(w > 0, y, 0.0)
    npts = w.sum(axis=1)
    has = npts >= min_points
    dq = float(np.median(np.diff(q[sel])))
    width = hi - lo
    # initial guesses: background through the window edges, peak at the largest excess
    k = 3
    idx = np.where(w > 0, np.arange(x.shape[1])[None, :], -1)
    left = np.sort(np.where(w > 0, np.arange(x.shape[1]), x.shape[1] + 1), axis=1)[:, :k]
    right = np.sort(idx, axis=1)[:, -k:]
    take = lambda a, i: np.take_along_axis(a, np.clip(i, 0, x.shape[1] - 1), axis=1)
    xl, yl = take(np.broadcast_to(x, y.shape), left).mean(1), take(y, left).mean(1)
    xr, yr = take(np.broadcast_to(x, y.shape), right).mean(1), take(y, right).mean(1)
    slope0 = np.where(xr > xl, (yr - yl) / np.where(xr > xl, xr - xl, 1.0), 0.0)
    if background == "constant":
        slope0[:] = 0.0
        b00 = np.minimum(yl, yr)
    else:
        b00 = yl - slope0 * xl
    excess = np.where(w > 0, y - (b00[:, None] + slope0[:, None] * x), -np.inf)
    imax = np.argmax(excess, axis=1)
    h0 = np.maximum(excess[np.arange(n), imax], 1e-12)
    above = (excess >= 0.5 * h0[:, None]).sum(axis=1)
    s0 = np.clip(above * dq / _FWHM_PER_SIGMA, dq, width / 4)
    p = np.stack([h0 * s0 * _SQRT2PI, x[0, imax], s0, b00, slope0], axis=1)
    p[~has] = 0.0
    p[~has, 2] = 1.0
    free = np.array([1, 1, 1, 1, 1 if background == "linear" else 0], float)

    def cost_of(params):
        f, J = _model(x, params)
        r = (f - y) * w
        return r, J * w[..., None] * free, np.sum(r * r, axis=1)

    r, J, cost = cost_of(p)
    lam = np.full(n, 1e-3)
    eye = np.eye(5)
    done = np.zeros(n, bool)      # converged: an accepted step that no longer lowers the cost
    for _ in range(max_iter):
        JtJ = np.einsum("nij,nik->njk", J, J)
        g = np.einsum("nij,ni->nj", J, r)
        diag = np.einsum("njj->nj", JtJ) + (1 - free)[None, :]
        A = JtJ + lam[:, None, None] * diag[:, :, None] * eye + (1 - free)[None, :, None] * eye
        try:
            step = -np.linalg.solve(A, g[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.zeros_like(p)
            for i in range(n):
                try:
                    step[i] = -np.linalg.solve(A[i], g[i])
                except np.linalg.LinAlgError:
                    pass
        trial = p + step
        trial[:, 2] = np.maximum(np.abs(trial[:, 2]), 1e-3 * dq)
        r_t, J_t, cost_t = cost_of(trial)
        better = np.isfinite(cost_t) & (cost_t < cost) & has
        p = np.where(better[:, None], trial, p)
        r = np.where(better[:, None], r_t, r)
        J = np.where(better[:, None, None], J_t, J)
        rel = np.where(better, (cost - cost_t) / np.maximum(cost, 1e-300), np.inf)
        cost = np.where(better, cost_t, cost)
        lam = np.where(better, np.maximum(lam / 10, 1e-12), np.minimum(lam * 10, 1e12))
        # a rejected step only raises the damping; each profile stops on its own criterion, so
        # its result does not depend on the other profiles of the batch
        done |= better & (rel < 1e-12)
        if np.all(done | ~has | (lam >= 1e12)):
            break
    nfree = int(free.sum())
    dof = np.maximum(npts - nfree, 1)
    redchi = cost / dof
    JtJ = np.einsum("nij,nik->njk", J, J) + (1 - free)[None, :, None] * eye
    with np.errstate(all="ignore"):
        det_ok = np.abs(np.linalg.det(JtJ)) > 0
        cov = np.linalg.pinv(np.where(det_ok[:, None, None], JtJ, eye)) * redchi[:, None, None]
        err = np.sqrt(np.einsum("njj->nj", cov))
    A_, mu, s = p[:, 0], p[:, 1] + qc, np.abs(p[:, 2])
    finite_p = np.all(np.isfinite(p), axis=1)
    finite = finite_p & np.all(np.isfinite(err[:, :4]), axis=1) & det_ok
    # a collapsed Gaussian (area <= 0, narrower than half a bin, wider than the window, or
    # centred outside it) is "no peak" even when its covariance is singular
    degenerate = finite_p & ((A_ <= 0) | (s < 0.5 * dq) | (s > width) | (mu < lo) | (mu > hi))
    status = np.where(~has, _NO_DATA, np.where(degenerate, _NO_PEAK, np.where(~finite, _FIT_FAILED, _OK)))
    no_peak = A_ < snr_min * err[:, 0]
    status = np.where((status == _OK) & no_peak, _NO_PEAK, status).astype(np.int8)
    ok = status == _OK
    vals = {"center": mu, "center_err": err[:, 1], "sigma": s, "sigma_err": err[:, 2],
            "fwhm": _FWHM_PER_SIGMA * s, "amplitude": A_, "amplitude_err": err[:, 0],
            "height": A_ / (s * _SQRT2PI), "intercept": p[:, 3], "slope": p[:, 4], "redchi": redchi}
    for key, v in vals.items():
        out[key] = np.where(ok, v, np.nan)
    out["status"] = status
    return out


def fit_profile(q: np.ndarray, profile: np.ndarray, q_window: tuple[float, float], *,
                background: str = "linear"):
    """lmfit fit of one radial profile: ``GaussianModel + LinearModel`` (or ``ConstantModel``).

    Parameters
    ----------
    q, profile
        Bin centres (1/A) and one radial profile (NaN bins ignored).
    q_window
        ``(q_lo, q_hi)``, 1/A.
    background
        ``"linear"`` or ``"constant"``.

    Returns
    -------
    lmfit.model.ModelResult
        Parameters ``g_amplitude``, ``g_center``, ``g_sigma``, ``g_fwhm``, ``g_height`` and
        ``b_intercept``/``b_slope`` (linear, the background about 0, not the window centre) or
        ``b_c``; ``fit_report()`` for the interactive user.

    Raises
    ------
    ValueError
        Fewer than 6 finite bins in the window.

    Notes
    -----
    lmfit built-in models (Newville et al., doi:10.5281/zenodo.11813), the paper's
    Gaussian fit of the radial average (S7). Validation: `fit_profiles` agrees (tests).
    """
    from lmfit.models import ConstantModel, GaussianModel, LinearModel

    q = np.asarray(q, float)
    y = np.asarray(profile, float)
    q_window = q_interval(q_window, "q_window", "--window")
    sel = (q >= q_window[0]) & (q <= q_window[1]) & np.isfinite(y)
    if np.count_nonzero(sel) < 6:
        raise ValueError(f"the window {tuple(q_window)} 1/A holds {np.count_nonzero(sel)} finite bins of the "
                         f"profile (need >= 6): the ring is masked or outside the reduction's q range "
                         f"({q.min():.3g}..{q.max():.3g} 1/A).")
    if background not in ("linear", "constant"):
        raise ValueError(f"background must be 'linear' or 'constant', got {background!r}.")
    xs, ys = q[sel], y[sel]
    bg = LinearModel(prefix="b_") if background == "linear" else ConstantModel(prefix="b_")
    model = GaussianModel(prefix="g_") + bg
    params = bg.guess(np.r_[ys[:3], ys[-3:]], x=np.r_[xs[:3], xs[-3:]])
    excess = ys - np.interp(xs, [xs[0], xs[-1]], [ys[:3].mean(), ys[-3:].mean()])
    params.update(GaussianModel(prefix="g_").guess(np.maximum(excess, 0), x=xs))
    params["g_sigma"].set(min=1e-6, max=float(xs[-1] - xs[0]))
    return model.fit(ys, params, x=xs)
