"""Try a set of starts, keep the best: the one refinement-and-choice routine of the scan fit.

Orientation fits are multi-modal, so every stage of the scan fit refines a frame from several
starting points and keeps one: the main pass (`fits.scan.frames.fit_frames`: search candidates
x configurations), the neighbour passes (`fits.scan.neighbours`: the frame's own fit, a
re-search, its neighbours' orientations) and the boundary lines (`fits.scan.boundary`: warm
start, scan fit, search). Here is what they share:

* `Start` (a frame, its starting `ModelParams`, where it came from) and `Candidate` (a refined
  or searched fit of a frame: deviance, status, fitted parameters, source);
* `refine_starts`: one batched Levenberg-Marquardt (`fits.batch.fit_batch`) of any number of
  starts of any frames, with the refinement settings and the setup's lattice-constant range;
* `choose`: per frame the usable candidate of the best rank with the lowest Poisson deviance
  (ties to the earlier candidate);
* `replaces`: the margin rule and the near-tie rule by which a new fit replaces a frame's
  existing one.

Policies (which starts to try, which statuses are usable, what ranks first) stay with the
callers; this module never calls back into them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import numpy as np

from fits.batch import BatchFit, GiveUp, effective_dispersion, fit_batch
from fits.parameters import spec
from fits.scan.pipeline import in_order
from fits.scan.results import WIDTHS
from fits.scan.settings import FitSettings
from fits.scan.setup import FitSetup
from fits.status import FitStatus
from xmodel.parameters import FWHM_PER_SIGMA, ModelParams


def stack_params(params: Sequence[ModelParams]) -> ModelParams:
    """One stacked `ModelParams` (leading axis: the sequence) of single-frame ones.

    The leaves are numpy arrays of the fields' dtypes: a stack of a new length is no new XLA
    program (an eager ``jnp.stack`` compiles one per length, about 0.07 s each on a CPU).
    """
    return jax.tree_util.tree_map(lambda *x: np.stack([np.asarray(v) for v in x]), *params)


def frame_checks(obs: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Valid points (B, P) and broken frames (B,): negative or infinite counts, or nothing valid.

    ``obs``: (B, P) counts on the fit points (NaN where not measured); ``weight``: (P,) pixels
    per point.
    """
    finite = np.isfinite(obs)
    valid = finite & (weight[None, :] > 0)
    neg = np.any(np.where(valid, obs, 0.0) < 0, axis=1)
    inf = np.any(np.isinf(obs) & (weight[None, :] > 0), axis=1)
    return valid, neg | inf | (valid.sum(axis=1) == 0)


def bad_data_messages(obs: np.ndarray, weight: np.ndarray) -> list[str]:
    """Why each frame of ``obs`` (B, P) is broken (`frame_checks`), '' for a usable one: no fit point
    with data (every one masked or NaN), or the number of points with infinite or negative counts."""
    measured = weight[None, :] > 0
    n_inf = np.sum(np.isinf(obs) & measured, axis=1)
    n_neg = np.sum(np.where(np.isfinite(obs) & measured, obs, 0.0) < 0, axis=1)
    n_valid = np.sum(np.isfinite(obs) & measured, axis=1)
    out = []
    for i, v, n in zip(n_inf, n_neg, n_valid):
        why = [f"{i} fit points infinite"] if i else []
        why += [f"{v} fit points negative"] if v else []
        if not why and n == 0:
            why = ["no data: every fit point is masked or NaN in this frame"]
        out.append("; ".join(why))
    return out


@dataclass(frozen=True, eq=False)
class Start:
    """A starting point of a refinement.

    Attributes
    ----------
    frame : the frame (row of the caller's observations) it starts.
    params : single-frame starting `ModelParams`.
    source : where it came from, for messages ("neighbour frame 12", "warm start", ...).
    order : tie-break among equal deviances (default: the order of the starts).
    stop_above : deviance the refinement must end below to be of use (the frame's best so far;
        ``inf``: none): a refinement that cannot is given up (`refine_starts`).
    """

    frame: int
    params: ModelParams
    source: str = ""
    order: tuple = ()
    stop_above: float = np.inf


@dataclass(frozen=True, eq=False)
class Candidate:
    """A fit of a frame that competes for it.

    Attributes
    ----------
    frame : the frame.
    objective : Poisson deviance of the fit (``inf`` where it did not end finite).
    status : its `FitStatus`.
    params : fitted single-frame `ModelParams`.
    source : where its start came from.
    order : tie-break among equal deviances.
    fit, row : the `fits.batch.BatchFit` and its row, for a refined start.
    result : a finished per-frame result (leading axis 1, `fits.scan.results` keys), for a
        candidate that comes from a whole `fits.scan.frames.fit_frames` run.
    message : what to report when it wins.
    """

    frame: int
    objective: float
    status: FitStatus
    params: ModelParams
    source: str = ""
    order: tuple = ()
    fit: BatchFit | None = None
    row: int = -1
    result: dict | None = None
    message: str = ""

    @property
    def dispersion(self) -> float:
        """The fit's dispersion ``max(phi, 1)`` (`fits.batch.effective_dispersion`; 1 where unknown):
        what its likelihood-ratio statistics are divided by."""
        phi = np.nan
        if self.fit is not None and len(self.fit.dispersion):
            phi = self.fit.dispersion[self.row]
        elif self.result is not None and "dispersion" in self.result:
            phi = self.result["dispersion"][0]
        return float(effective_dispersion(phi))

    @property
    def orientation(self) -> np.ndarray:
        """(3, 3) fitted SL orientation (crystal -> lab)."""
        return np.asarray(self.params.sl_orientation(), np.float64)


def params_from_row(r: dict, k: int, setup: FitSetup, settings: FitSettings) -> ModelParams:
    """`ModelParams` to start a refinement from row ``k`` of a fit result (`fits.scan.frames`
    output or `fits.scan.results.read_fits` rows).

    Its SL orientation, lattice constant (clipped to ``setup.a_range``, A), scales (floored at
    `RefineSettings.scale_floor` / ``background_floor``, so that none starts at its bound),
    disorder and NC relationship (the template's where the fit left them undetermined).
    """
    template, fl, bg = setup.template, settings.refine.scale_floor, settings.refine.background_floor
    dis, rel = r["disorder_deg"][k], r["relationship"][k]
    return template.replace(
        base_orientation=r["orientation_matrix"][k], inplane=0.0, tilt1=0.0, tilt2=0.0,
        lattice_constant=float(np.clip(r["lattice_constant"][k], *setup.a_range)),
        sl_scale=max(float(np.nan_to_num(r["sl_scale"][k])), fl),
        diffuse_scale=max(float(np.nan_to_num(r["diffuse_scale"][k])), fl),
        al_scale=max(float(np.nan_to_num(r["al_scale"][k])), fl),
        background=max(float(np.nan_to_num(r["background"][k])), bg),
        disorder=np.radians(dis) / FWHM_PER_SIGMA if np.isfinite(dis) else template.disorder,
        relationship=rel if np.all(np.isfinite(rel)) else template.relationship, **row_widths(r, k, setup, settings))


def row_widths(r: dict, k: int, setup: FitSetup, settings: FitSettings) -> dict:
    """The peak widths of row ``k`` of a fit result that the fit refines (``fit.vary``), as
    `ModelParams` fields (internal units) clipped into the fit's bounds (`FitSetup.bounds`); the
    template's widths (none here) where the row has none or the fit holds them."""
    bounds = setup.bounds(settings.refine.vary)
    out = {}
    for name in WIDTHS:
        value = np.asarray(r.get(name, np.nan), np.float64)
        value = float(value[k]) if value.ndim else float(value)
        if name in bounds and np.isfinite(value):
            s = spec(name)
            out[s.field] = float(np.clip(value, *bounds[name])) * s.to_internal
    return out


def refine_starts(setup: FitSetup, obs: np.ndarray, starts: Sequence[Start], settings: FitSettings, *,
                  chunk: int | None = None, min_rows: int = 1,
                  power_of_two: bool = False, spikes_masked: bool = False) -> list[Candidate]:
    """Refine every start against its frame's data; one `Candidate` per start, in order.

    Parameters
    ----------
    setup : model on the fit points, lattice-constant range (`FitSetup.a_range`, the bound of
        ``lattice_constant``), pixels per point.
    obs : (F, P) counts of the frames on the fit points (NaN where not measured); only the rows
        of one call are taken as float64 at a time.
    starts : `Start` s; ``start.frame`` indexes ``obs``.
    settings : `RefineSettings` (parameters, iterations, tolerance).
    chunk : refine at most this many starts per call of `fits.batch.fit_batch` (None: all).
    min_rows, power_of_two : pad each call to at least ``min_rows`` rows, or to a power of two
        of at least that, with weightless copies of its first start, so that few shapes compile.
    spikes_masked : ``obs`` comes from polar images whose hot pixels are masked already
        (`FitSetup.mask_spikes`); otherwise they are masked here on the fit points.

    Notes
    -----
    Points are weighted by their pixels (`FitSetup.weight`); hot pixels and zingers
    (`fits.scan.search.isolated_spikes` at ``settings.search.spike_sigma``) are left out, so every
    refinement of a frame sees the same points; a broken frame (`frame_checks`)
    gets weight 0, which `fits.batch.fit_batch` reports as bad data. Each frame's refinement
    runs on its own (`fits.batch`), so the cut into calls changes no result. A start with a
    finite ``stop_above`` is given up once it cannot end below it (`fits.batch.GiveUp` with
    `RefineSettings.give_up_after`, ``give_up_factor``, ``give_up_gap``); it then ends
    NOT_CONVERGED at the deviance it had reached.
    """
    if not starts:
        return []
    obs = np.asarray(obs)

    def data(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # counts and weights of the frames of one call only (a neighbour pass of a full scan holds the
        # fit points of thousands of frames); each frame is masked on its own, so this is per frame
        uniq, inv = np.unique(rows, return_inverse=True)
        o = np.asarray(obs[uniq], np.float64)
        if not spikes_masked:           # hot pixels: no term of the model, and they would set the dispersion
            o = setup.mask_spikes_on_points(o, settings.search)
        valid, bad = frame_checks(o, setup.weight)
        return np.where(valid, o, 0.0)[inv], np.where(valid & ~bad[:, None], setup.weight[None, :], 0.0)[inv]

    rs = settings.refine
    clusters = setup.error_clusters(rs)
    size = len(starts) if chunk is None else int(chunk)
    def refine_chunk(s0: int) -> list[Candidate]:
        part = list(starts[s0:s0 + size])
        n_rows = max(min_rows, len(part))
        if power_of_two:
            n_rows = max(min_rows, 1 << (len(part) - 1).bit_length())
        rows = np.array([s.frame for s in part] + [part[0].frame] * (n_rows - len(part)))
        p0 = stack_params([s.params for s in part] + [part[0].params] * (n_rows - len(part)))
        y_rows, w_rows = data(rows)
        w_rows[len(part):] = 0.0                                 # padding: not fitted
        target = np.array([s.stop_above for s in part] + [np.inf] * (n_rows - len(part)), np.float64)
        stop = {}
        if np.isfinite(target).any():
            stop = {"stop_above": target, "give_up": GiveUp(rs.give_up_after, rs.give_up_factor, rs.give_up_gap)}
        f = fit_batch(y_rows, w_rows, setup.model, p0, list(rs.vary), bounds=setup.bounds(rs.vary),
                      max_iter=rs.max_iter, tol=rs.tol, prior=rs.prior(), clusters=clusters, **stop)
        return [Candidate(frame=s.frame, objective=float(f.objective[k]) if np.isfinite(f.objective[k]) else np.inf,
                          status=f.status[k], params=jax.tree_util.tree_map(lambda x, k=k: x[k], f.params),
                          source=s.source, order=s.order or (s0 + k,), fit=f, row=k)
                for k, s in enumerate(part)]

    out: list[Candidate] = []
    # chunks side by side (fits.scan.pipeline): one chunk's last frames beside the next one's first
    chunks = range(0, len(starts), size)       # one chunk (the main pass): computed here, no thread
    for _, cands in in_order(refine_chunk, chunks, settings.run.batches_in_flight):
        out += cands
    return out


def choose(candidates: Sequence[Candidate], usable: Callable[[Candidate], bool] | None = None,
           rank: Callable[[Candidate], int] | None = None) -> dict[int, Candidate]:
    """Per frame, the usable candidate of the best (lowest) rank with the lowest deviance.

    Ties go to the lower ``order`` (the earlier candidate). ``usable`` (default: all) and
    ``rank`` (default: 0 for all) are the caller's policy. Frames without a usable candidate
    are absent from the result.
    """
    best: dict[int, tuple] = {}
    for n, c in enumerate(candidates):
        if usable is not None and not usable(c):
            continue
        key = (rank(c) if rank is not None else 0, c.objective, c.order, n)
        if c.frame not in best or key < best[c.frame][0]:
            best[c.frame] = (key, c)
    return {i: c for i, (_, c) in best.items()}


def replaces(new_objective: float, old_objective: float, margin: float, *, old_agrees: bool = False,
             new_agrees: bool = False, old_fitted: bool = True, dispersion: float = 1.0) -> bool:
    """Whether a new fit of a frame replaces its existing one.

    The margin rule: the new fit explains the frame clearly better (its Poisson deviance divided
    by ``dispersion`` is below the old one's by more than ``margin``, a likelihood ratio of
    ``exp(margin / 2)``; the quasi-likelihood ratio of McCullagh & Nelder, Generalized Linear
    Models, 2nd ed. 1989, sec. 9.2, with the dispersion ``max(phi, 1)`` of the new fit), or the
    frame had no fit (old deviance not finite). The near-tie rule: within the margin either way (the
    pseudo-symmetric twins of a pattern fit within 0-2 deviance units, which the frame alone
    cannot decide), the new fit wins when it agrees with the frame's neighbours and the old one,
    a fitted orientation (``old_fitted``), does not: there the grain's continuity decides.
    """
    scaled = margin * max(float(dispersion), 1.0)
    if not np.isfinite(old_objective) or new_objective < old_objective - scaled:
        return True
    return bool(new_objective <= old_objective + scaled and old_fitted and not old_agrees and new_agrees)
