"""The scan fit's model with each SL reflection evaluated only in a window of the polar grid.

The orientation-free support of the scan fit's model (`xmodel.pattern.build_support` with
``orientation_margin_deg=None``, `fits.scan.setup.support_model`) evaluates every reflection of a
SL shell at every point of the shell's q-band, since the orientation is what the fit looks for:
about 1.5 million Gaussians per evaluation on the 31 x 31 twin's fit points, of which a few
percent are not negligible. On a polar grid (regular chi rows over 360 deg, increasing q) a
reflection ``G`` only reaches the points near its own azimuth ``chi_G = atan2(G_1, G_2)`` and
near ``|q| = |G|``, so `WindowedModel` finds, at every evaluation, the rows and columns of the
grid around ``(chi_G, |G|)`` of the current orientation and lattice constant (a
`jax.lax.dynamic_slice` of a per-shell table of the grid's points) and evaluates the reflection
there only, about 20 times fewer Gaussians. The windows move with the parameters, so the model
stays orientation-free; the Jacobian of a scan-fit frame costs about an eighth of the dense
one's. The AL peaks, the diffuse term and the background are the base model's.

What is left out. A point outside a reflection's window is more than ``window_nsigma``
tangential sigmas of the widest allowed peak (``sl_mosaic`` and, with the "crystal" peak shape,
the size term ``sl_radial_width`` at the shell's smallest |G|, both times the support's
``width_factor``; `xmodel.pattern.sl_peak_widths`) or more than the base support's
``band_nsigma`` radial sigmas (at the shell's largest |G|) from it, where
the Gaussian is below ``exp(-nsigma^2 / 2)`` of its height (3.4e-4 at 4): the same cut as the
base support's q-bands. On reduced bins (points with a q spread, `xmodel.pixels.PixelSet.spread`)
each peak is its mean over the bin's pixels (`xmodel.pattern.binned_peak`), a Gaussian widened
by the bin's spread, and the windows use the widened sigmas (the largest spread of the points).
For a point at elevation ``beta`` out of the detector plane (the Ewald
sphere; ``|beta| <= 1.1 deg`` for the SAXS points of the twin) and an azimuth ``Theta`` away
from ``chi_G``, ``q_hat . G_hat <= sqrt(1 - cos^2 beta sin^2 Theta)`` for any elevation of
``G`` (spherical law of cosines, maximised over the elevation of G), so the tangential chord
``2 |G|^2 (1 - q_hat . G_hat)`` exceeds ``(n sigma_t)^2`` once
``sin Theta >= sqrt(1 - kappa^2) / cos beta`` with ``kappa = 1 - n^2 mu^2 / 2``, ``mu`` the
mosaic in radians; the window holds the rows within ``Theta`` plus the points' own offset from
their row's centre. In the radial direction it holds every column whose points lie within the
radial cut of some ``|G|`` whose nearest column is the window's centre.

With a tail across the Ewald sphere (``model.sl_peak_tail``,
`xmodel.pattern.across_sphere_profile`) the windows stay these: the tail lies along ``e2``, off
the detector plane, and the chord's part along ``e1`` keeps the Gaussian. A reflection at an
elevation ``el`` off the sphere has that part ``|G| cos(el) sin(Theta)``, so the window's chi cut
holds ``cos(el)`` of its sigmas there; what its Lorentzian tail leaves outside is below 1e-3 of
the brightest reflection of a frame (tests/fits/scan/test_window.py).

Validation: equals the orientation-free `PatternModel` within 1e-3 of the brightest SL peak,
and so does its forward-mode Jacobian, on the twin's fit points at random orientations, tilts
and lattice constants (tests/fits/scan/test_window.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from xmodel.parameters import ModelParams
from xmodel.pattern import (
    TERMS,
    PatternModel,
    ball_sigmas,
    bin_frame,
    binned_peak,
    chord_on_e1,
    has_tail,
    saxs_factors,
    sl_across,
    sl_peak,
    sl_peak_widths,
    sl_size_variance,
    sl_widths,
)
from xmodel.precision import EXACT

log = logging.getLogger(__name__)

TWO_PI = 2.0 * np.pi


@dataclass(frozen=True)
class _Windows:
    """Static layout of the windows (hashable; closed over by the jitted functions).

    ``shells``: per SL shell of the base support ``(n2, rows W, columns V, first column of its
    table)``; the window of a reflection is ``2 W + 1`` rows by ``2 V + 1`` columns.
    """

    shells: tuple[tuple[int, int, int, int], ...]
    n_chi: int
    chi_low: float
    chi_step: float
    n_saxs: int


def window_sizes(q_grid: np.ndarray, qabs: np.ndarray, col: np.ndarray, reach: float,
                 row_offset_deg: float, chi_step: float, mosaic: float, elevation: float,
                 nsigma: float) -> tuple[int, int] | None:
    """Rows ``W`` and columns ``V`` either side of a reflection's own row and column that hold
    every point it reaches, or None where no window smaller than the whole ring would.

    Parameters
    ----------
    q_grid : (Q,) the grid's q bin centres (1/A), increasing.
    qabs, col : (n,) ``|q|`` (1/A) and column of the shell's points.
    reach : radial cut ``band_nsigma * sigma_r`` (1/A) of the base support.
    row_offset_deg : largest azimuth offset of a point from its row's centre (deg).
    chi_step : row spacing (deg).
    mosaic : widest tangential sigma over ``|G|`` the fit allows (rad).
    elevation : largest ``|beta|`` of the points out of the detector plane (rad).
    nsigma : tangential cut in sigmas.

    Notes
    -----
    Rows: see the module docstring (``Theta``); a reflection's azimuth lies within half a row of
    its row's centre, a point within ``row_offset_deg`` of its own. Columns: a reflection of
    modulus ``g`` is centred on the first column with ``q >= g``; every ``g`` that reaches a
    point (``|g - |q|| < reach``) has that column between those of ``|q| - reach`` and
    ``|q| + reach``.
    """
    half = 0.5 * (nsigma * mosaic) ** 2
    if half >= 1.0:
        return None
    kappa = 1.0 - half
    s = np.sqrt(1.0 - kappa ** 2) / np.cos(elevation)
    if s >= 1.0:
        return None
    theta = np.degrees(np.arcsin(s))
    rows = int(np.ceil((theta + row_offset_deg) / chi_step + 0.5))
    lo = np.searchsorted(q_grid, qabs - reach)
    hi = np.searchsorted(q_grid, qabs + reach)
    cols = int(max(np.max(col - lo, initial=0), np.max(hi - col, initial=0)))
    return rows, cols


class WindowedModel(PatternModel):
    """`PatternModel` on points of a polar grid whose SL peaks are evaluated in windows.

    Same interface and values as the base model (within its support's cut; module docstring):
    ``model(params)``, `evaluate`, `components` and `image` use the windows; `compose`,
    `value_and_grad` and `jacobian` are the base model's (the same values, every point of the
    bands). Build it with `windowed_model`, which falls back to the base model where the grid
    does not allow windows.
    """

    def __init__(self, base: PatternModel, windows: _Windows, arrays: dict):
        self.base = base
        self.pixels = base.pixels
        self.structure = base.structure
        self.support = base.support
        self.layout = base.layout
        self.windows = windows
        self.arrays = {**base.arrays, **arrays}
        self._fn = jax.jit(self.evaluate)

    @property
    def evaluate(self):
        """The pure function ``(arrays, params) -> intensities`` (not jitted; see `PatternModel.evaluate`)."""
        return partial(_evaluate, self.base, self.windows)

    def components(self, parts: tuple[str, ...] = TERMS):
        """The pure function ``(arrays, params) -> (len(parts), P)`` of unit-scale terms (not jitted;
        see `PatternModel.components`, which checks ``parts``)."""
        self.base.components(parts)
        return partial(_components, self.base, self.windows, tuple(parts))


def windowed_model(base: PatternModel, index: np.ndarray, chi_deg: np.ndarray, q: np.ndarray,
                   template: ModelParams, width_factor: float, nsigma: float) -> PatternModel:
    """The base model with its SL peaks evaluated in windows of the polar grid, or the base model.

    Parameters
    ----------
    base : orientation-free `PatternModel` on points of the polar grid (`fits.scan.setup.support_model`).
    index : (P,) flat indices (row-major, (chi, q)) of the base model's points in the grid.
    chi_deg : (C,) regular chi bin centres over 360 deg (deg); q : (Q,) increasing q bin centres (1/A).
    template : sample parameters (``sl_radial_width``, ``sl_mosaic``).
    width_factor : widths may grow by this factor in a fit (the base support's).
    nsigma : tangential cut in sigmas (`fits.scan.settings.SupportSettings.sl_window_nsigma`);
        0 keeps the base model.

    Returns
    -------
    PatternModel
        A `WindowedModel`, or ``base`` where windows do not apply (``nsigma`` 0, an irregular
        chi grid, q not increasing, or a window that would span the whole ring).
    """
    chi = np.asarray(chi_deg, float)
    q = np.asarray(q, float)
    index = np.asarray(index, np.int64)
    C = chi.size
    step = 360.0 / C if C else 0.0
    regular = C > 2 and np.allclose(np.diff(chi), step, atol=1e-6 * step)
    if nsigma <= 0 or not regular or not np.all(np.diff(q) > 0) or not base.support.sl_shells:
        if nsigma > 0:
            log.info("SL windows not used: the polar grid needs regular chi rows over 360 deg and increasing q")
        return base
    sup = base.support
    saxs = np.asarray(sup.saxs_points, np.int64)               # pixel-set indices of the SAXS points
    q_lab = np.asarray(base.pixels.q_lab, np.float64).reshape(-1, 3)[saxs]
    qabs = np.linalg.norm(q_lab, axis=1)
    flat = index[saxs]
    row, col = flat // q.size, flat % q.size
    chi_pt = np.degrees(np.arctan2(q_lab[:, 0], q_lab[:, 1]))
    offset = float(np.max(np.abs((chi_pt - chi[row] + 180.0) % 360.0 - 180.0), initial=0.0))
    elevation = float(np.max(np.abs(np.arcsin(np.clip(q_lab[:, 2] / np.maximum(qabs, 1e-12), -1, 1))),
                             initial=0.0))
    wf = max(1.0, float(width_factor))
    nband = float(base.structure.band_nsigma)
    shape, para = base.layout.sl_shape, base.layout.sl_paracrystal
    sr0, mosaic0 = float(template.sl_radial_width), float(template.sl_mosaic)
    frame = None
    if base.pixels.spread is not None:
        # reduced bins: each peak is convolved with its bin's q spread (`xmodel.pattern.binned_peak`),
        # which widens it radially by S_uu and tangentially by S_11: the windows widen with them
        e1, local = bin_frame(q_lab, np.asarray(base.pixels.spread, np.float64).reshape(-1, 3, 3)[saxs])
        frame = (e1, local)
    shells, tables = [], []
    for sh in sup.sl_shells:
        pts = np.asarray(sh.points, np.int64)
        # "mosaic": one radial sigma and one angle sigma_t / |G| for every shell. "crystal": the
        # radial sigma at the shell's largest |G| (below 1.25 times its points' largest |q|: the
        # band reach is a few radial sigmas) and the angle at its smallest (its points' smallest
        # |q| less the reach); widths scale with width_factor (`sl_peak_widths` is homogeneous)
        g_top = 1.25 * float(qabs[pts].max())
        sr = float(sl_peak_widths(g_top, sr0, mosaic0, shape, para)[0])
        reach = nband * sr * wf
        if shape == "mosaic":
            mosaic = mosaic0 * wf
        else:
            g_low = max(float(qabs[pts].min()) - reach, 1e-6)
            mosaic = float(sl_peak_widths(g_low, sr0, mosaic0, shape, para)[1]) / g_low * wf
        if frame is not None:
            local = frame[1]
            reach = float(np.sqrt(reach ** 2 + nband ** 2 * float(np.max(local[0], initial=0.0))))
            mosaic = float(np.sqrt(mosaic ** 2 + float(np.max(local[2] / np.maximum(qabs, 1e-12) ** 2,
                                                                initial=0.0))))
        size = window_sizes(q, qabs[pts], col[pts], reach, offset, step, mosaic, elevation, nsigma)
        if size is None or 2 * size[0] + 1 >= C:
            log.info("SL windows not used: a window of shell %d would span the whole ring", sh.n2)
            return base
        W, V = size
        c0 = int(col[pts].min()) - V
        ncol = int(col[pts].max()) + V - c0 + 1 + 1
        table = np.full((C + 2 * W, ncol), -1, np.int32)
        table[row[pts] + W, col[pts] - c0] = pts
        table[:W] = table[C:C + W]                              # rows wrap around the ring
        table[C + W:] = table[W:2 * W]
        shells.append((int(sh.n2), W, V, c0))
        tables.append(table)
    dtype = base.arrays["weight"].dtype
    windows = _Windows(shells=tuple(shells), n_chi=C, chi_low=float(chi[0] - 0.5 * step), chi_step=step,
                       n_saxs=int(saxs.size))
    arrays = {"win_table": [jnp.asarray(t) for t in tables], "win_q": jnp.asarray(q_lab.T, dtype),
              "win_q2": jnp.asarray(np.sum(q_lab ** 2, axis=1), dtype), "win_qgrid": jnp.asarray(q, dtype)}
    if frame is not None:
        arrays["win_frame"] = jnp.asarray(frame[0], dtype)
        arrays["win_spread"] = jnp.asarray(frame[1], dtype)
    return WindowedModel(base, windows, arrays)


def _windows_at(table, rows, col, size: tuple[int, int]):
    """(m, rows, cols) entries of ``table`` in the windows starting at ``rows`` (m,) and column ``col``."""
    return jax.vmap(lambda r: jax.lax.dynamic_slice(table, (r, col), size))(rows)


def _sl_windowed(layout, windows: _Windows, arrays: dict, p: ModelParams, bragg):
    """(n_saxs,) SL peak sum times the Bragg factor at the SAXS points (`xmodel.pattern.shell_sum`
    per reflection, on its window only)."""
    dtype = bragg.dtype
    rot = p.sl_orientation()
    qx, qy, qz = arrays["win_q"][0], arrays["win_q"][1], arrays["win_q"][2]
    q2 = arrays["win_q2"]
    sl = jnp.zeros(windows.n_saxs + 1, dtype)
    for i, (n2, W, V, c0) in enumerate(windows.shells):
        table = arrays["win_table"][i]
        g = float(TWO_PI * np.sqrt(n2)) / p.lattice_constant
        g_rot = (TWO_PI / p.lattice_constant) * jnp.matmul(arrays["sl_hkl"][i], rot.T, precision=EXACT)   # (m, 3)
        chi_g = jnp.degrees(jnp.arctan2(g_rot[:, 0], g_rot[:, 1]))
        r0 = jnp.floor((chi_g - windows.chi_low) / windows.chi_step).astype(jnp.int32) % windows.n_chi
        start = jnp.searchsorted(arrays["win_qgrid"], g).astype(jnp.int32) - c0 - V
        start = jnp.clip(start, 0, table.shape[1] - (2 * V + 1))
        win = _windows_at(table, r0, start, (2 * W + 1, 2 * V + 1)).reshape(g_rot.shape[0], -1)   # (m, K)
        valid = win >= 0
        k = jnp.where(valid, win, 0)
        qa = jnp.sqrt(q2[k])
        gn = g_rot / g
        sr, st, height = sl_widths(layout, g, p)
        eta, sa = sl_across(layout, g, p)
        ball = sl_size_variance(layout.sl_shape, p.sl_radial_width)
        c = gn[:, 0:1] * qx[k] + gn[:, 1:2] * qy[k] + gn[:, 2:3] * qz[k]
        if "win_frame" in arrays:      # reduced bins: the peak's mean over the bin's pixels
            e1 = arrays["win_frame"]
            c1 = gn[:, 0:1] * e1[0][k] + gn[:, 1:2] * e1[1][k] + gn[:, 2:3] * e1[2][k]
            vals = binned_peak(qa, c, c1, arrays["win_spread"][:, k], g, sr, st, eta, sa, ball)
        else:
            dr = qa - g
            dt2 = (2.0 * g * g) * jnp.maximum(1.0 - c / jnp.maximum(qa, 1e-12), 0.0)
            t1 = (g * g) * chord_on_e1(gn[:, 0:1], gn[:, 1:2], qx[k], qy[k]) ** 2 if has_tail(eta) else None
            st_q, sa_q = ball_sigmas(qa, g, st, sa, ball)
            vals = sl_peak(dr * dr, dt2, t1, sr, st_q, eta, sa_q)
        sl = sl.at[jnp.where(valid, win, windows.n_saxs)].add(jnp.where(valid, (height * vals) * bragg[k], 0.0))
    return sl[:windows.n_saxs]


def _terms(base: PatternModel, windows: _Windows, arrays: dict, params: ModelParams, parts: tuple[str, ...]):
    """Unit-scale terms ``{name: (P,)}`` for ``parts``: the base model's, the SL peaks in windows."""
    other = tuple(t for t in parts if t != "sl_scale")
    out = dict(zip(other, base.components(other)(arrays, params))) if other else {}
    if "sl_scale" in parts:
        dtype = arrays["weight"].dtype
        p = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)
        _, bragg, place = saxs_factors(base.layout, arrays, p)
        out["sl_scale"] = place(_sl_windowed(base.layout, windows, arrays, p, bragg))
    return out


def _evaluate(base: PatternModel, windows: _Windows, arrays: dict, params: ModelParams):
    """``sum_t scale_t * term_t`` over `TERMS`: expected counts per point."""
    dtype = arrays["weight"].dtype
    t = _terms(base, windows, arrays, params, TERMS)
    return sum(jnp.asarray(getattr(params, name), dtype) * t[name] for name in TERMS)


def _components(base: PatternModel, windows: _Windows, parts: tuple[str, ...], arrays: dict, params: ModelParams):
    t = _terms(base, windows, arrays, params, parts)
    return jnp.stack([t[name] for name in parts])
