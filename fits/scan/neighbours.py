"""Neighbour passes of a scan fit: doubtful frames refitted from their scan neighbours.

Orientation fits are multi-modal, and a boundary point's few SL peaks are often matched by
several orientations (`fits.scan.search`); the SL rotates continuously across a boundary (paper,
Fig. 3-4: 8-14 deg over microns), so a neighbour's fitted orientation is a start in the right
basin. Compressed boundary points also put their lattice constant far from the radial profile's
maxima (fcc shells alias, `fits.scan.search.lattice_constant_score`), so the first pass also searches
every doubtful frame again on a grid of lattice constants (`lattice_grid`). The clearly lower
Poisson deviance wins, and in a near tie the fit that agrees with the neighbours. `neighbour_passes` runs them after the main pass of
`fits.scan.driver.fit_scan` (resumable: ``/entry/fits`` attribute ``neighbour_passes_done``).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from fits.batch import effective_dispersion
from fits.scan import results as store
from fits.scan.angles import report_angles
from fits.scan.frames import fit_frames, store_fit
from fits.scan.linear import COMPONENTS, component_images, poisson_deviance_gain
from fits.scan.mixed import flag_mixed
from fits.scan.pipeline import in_order
from fits.scan.search import radial_surroundings
from fits.scan.settings import FitSettings, SearchSettings
from fits.scan.setup import FitSetup
from fits.scan.starts import (
    Candidate,
    Start,
    choose,
    frame_checks,
    params_from_row,
    refine_starts,
    replaces,
    stack_params,
)
from fits.status import FitStatus
from xmodel import orientation
from xmodel.reduced import ReducedScan, open_reduced

log = logging.getLogger(__name__)


def lattice_grid(a_range: tuple[float, float], step: float) -> np.ndarray:
    """Lattice constants (A) from ``a_range[0]`` to ``a_range[1]`` spaced by the factor ``1 + step``
    (`NeighbourSettings.grid_step`).

    The template search (`fits.scan.search.search_orientations`) tolerates about 1-2 % of error in
    ``a`` (the ring extraction's radial width), so a 2 % grid always holds a usable value, also
    where the radial profile's maxima are all aliases of the true ``a``.
    """
    lo, hi = float(min(a_range)), float(max(a_range))
    if not (lo > 0 and np.isfinite(hi)) or step <= 0:
        raise ValueError(f"lattice_grid: need 0 < a_min <= a_max and step > 0, got a_range {a_range!r}, "
                         f"step {step!r}.")
    n = int(np.floor(np.log(hi / lo) / np.log1p(step) + 1e-9)) + 1
    return lo * (1.0 + step) ** np.arange(n)


def neighbours(positions_um: np.ndarray, radius_steps: float) -> list[np.ndarray]:
    """Indices of the scan points within ``radius_steps`` scan steps (the median nearest-neighbour
    distance) of each point, itself excluded (`NeighbourSettings.neighbour_radius_steps`)."""
    pos = np.asarray(positions_um, float)
    tree = cKDTree(pos)
    d, _ = tree.query(pos, k=2)
    step = float(np.median(d[:, 1])) if pos.shape[0] > 1 else 1.0
    return [np.array([k for k in nb if k != i], int)
            for i, nb in enumerate(tree.query_ball_point(pos, radius_steps * step))]


def agrees(R_i: np.ndarray, R_nb: np.ndarray, agree_deg: float, share: float) -> bool:
    """True when at most ``share`` of the neighbour orientations ``R_nb`` (n, 3, 3) lie further than
    ``agree_deg`` from ``R_i`` (`NeighbourSettings.agree_deg`, ``agree_share``)."""
    if len(R_nb) == 0 or not np.all(np.isfinite(R_i)):
        return False
    return bool(np.mean(np.degrees(np.atleast_1d(orientation.misorientation_angle(R_i, R_nb))) > agree_deg) <= share)


def neighbour_passes(out: Path, results: ReducedScan | str | Path, setup: FitSetup, settings: FitSettings,
                     progress: bool, timings: dict | None = None, reuse: bool = True) -> None:
    """Run the remaining `neighbour_pass` es once every frame is done (resumable by attribute).

    ``timings``: seconds per stage are added to it (`neighbour_pass`); ``reuse``: a pass reuses
    the refinements of the last ones whose neighbour did not change (the same result; False only
    to measure what that saves).
    """
    scan = results if isinstance(results, ReducedScan) else open_reduced(results)
    frames_done, passes_done = store.progress(out)
    if frames_done < scan.n_frames:
        return
    n_passes = settings.neighbours.neighbour_passes
    # the first pass looks at every frame, a later one (also a resumed one) near what the last changed
    changed = store.changed_frames(out) if passes_done else None
    memo: dict = {}                         # refinements of earlier passes, reused where nothing changed
    for k in range(passes_done, n_passes):
        changed = neighbour_pass(out, scan, setup, settings, progress, near=changed, research=k == 0,
                                 memo=memo if reuse else None, timings=timings)
        store.set_neighbour_passes_done(out, k + 1 if changed else n_passes, changed)
        if progress:
            log.info("xmodel fit: neighbour pass %d: %d frames improved", k + 1, len(changed))
        if not changed:
            break


def doubtful(r: dict, nbs: list[np.ndarray], settings: FitSettings, changed: set | None
             ) -> tuple[list[int], list[tuple[int, int]]]:
    """Doubtful frames and the (frame, neighbour) starts to try for each (see `neighbour_pass`)."""
    ns = settings.neighbours
    R = r["orientation_matrix"]
    ok = r["status"] == FitStatus.OK.code
    # weak rings too: the SL deviance gain decides whether a neighbour's orientation explains SL
    # signal the ring search missed (empty frames of the twin score below 1.6)
    has = np.isfinite(r["significance"]) & (r["significance"] >= ns.neighbour_min_significance) & \
        (r["status"] != FitStatus.BAD_DATA.code)
    frames, pairs = [], []
    for i in np.flatnonzero(has):
        if changed is not None and not changed.intersection(nbs[i].tolist()):
            continue
        cand = [int(k) for k in nbs[i] if ok[k]]
        if not cand:
            continue
        # an ok frame that agrees with most of its ok neighbours is left alone
        if ok[i] and agrees(R[i], R[cand], ns.agree_deg, ns.agree_share):
            continue
        mis = np.degrees(np.atleast_1d(orientation.misorientation_angle(R[i], R[cand]))) if ok[i] else None
        frames.append(int(i))
        kept: list[int] = []
        for c in np.argsort(r["objective"][cand]):
            k = cand[c]
            if mis is not None and mis[c] <= ns.distinct_deg:
                continue
            if all(np.degrees(orientation.misorientation_angle(R[k], R[m])) > ns.distinct_deg for m in kept):
                kept.append(k)
        pairs += [(int(i), k) for k in kept[:ns.max_neighbour_starts]]
    return frames, pairs


def term_gains(setup: FitSetup, params, obs: np.ndarray, *, sigma_q: float = SearchSettings.ring_sigma_q,
               spike_sigma: float = SearchSettings.spike_sigma, spikes_masked: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """Poisson deviance gains (n,) of the SL and of the AL term of the fitted ``params`` (stacked).

    ``D(model without the term) - D(model)`` on the fit points, point by point
    (`fits.scan.linear.poisson_deviance_gain`): how much the frame's data need the term (a
    likelihood ratio, Wilks 1938, doi:10.1214/aoms/1177732360). Hot pixels
    (`fits.scan.search.isolated_spikes` at ``spike_sigma``, the bins' pixel counts) are left out,
    unless ``spikes_masked`` says ``obs`` comes from masked polar images (`FitSetup.mask_spikes`).

    The SL gain is that of the SL peaks' radially localised part, as the search's ring
    significance (`fits.scan.search.localised_significance`): where the radial surroundings of the
    data less the fitted SL peaks (`fits.scan.search.radial_surroundings`: the measured pixels
    3-5 ``sigma_q`` inside and outside the point at the same chi) stand more than 3 Poisson sigma
    of their mean above the model without SL peaks, both models are floored at them,
    ``max(m, s)``: a nuisance term for an excess that runs along q at fixed chi. An SL spot put
    on a parasitic streak then gains only what stands above the streak; an SL peak, localised in
    q (radial sigma about ``sigma_q``), keeps its gain, its surroundings holding the background.
    The surroundings lie 3-5 radial sigmas of the frame's own SL peaks away where the fit refined
    that sigma above ``sigma_q`` (``sl_radial_width`` in ``fit.vary``): inside them a wide peak
    would cover its own surroundings, and an SL term widened over a streak would keep the
    streak's gain.
    """
    obs = np.asarray(obs, np.float64)
    C, Q = setup.chi_deg.size, setup.q.size
    if not spikes_masked:
        obs = setup.mask_spikes_on_points(obs, replace(SearchSettings(), ring_sigma_q=sigma_q, spike_sigma=spike_sigma))
    comps = component_images(setup.model, params)                             # (n, 4, P)
    scales = np.stack([np.asarray(getattr(params, c), np.float64).reshape(-1) for c in COMPONENTS], 1)
    mu = np.einsum("nc,ncp->np", scales, comps)
    valid, _ = frame_checks(obs, setup.weight)
    y = np.where(valid, obs, 0.0)
    sl, al = COMPONENTS.index("sl_scale"), COMPONENTS.index("al_scale")
    sl_term = scales[:, sl:sl + 1] * comps[:, sl]
    img = np.full((obs.shape[0], C * Q), np.nan)
    img[:, setup.index] = np.where(valid, obs - sl_term, np.nan)
    # each frame's surroundings at 3-5 sigmas of its SL peaks (frames of equal width together)
    sigma = np.maximum(float(sigma_q), np.broadcast_to(np.asarray(params.sl_radial_width, np.float64).reshape(-1),
                                                       (obs.shape[0],)))
    around, n_around = np.full((obs.shape[0], C, Q), np.nan), np.zeros((obs.shape[0], C, Q))
    for s in np.unique(sigma):
        rows = sigma == s
        around[rows], n_around[rows] = radial_surroundings(img[rows].reshape(-1, C, Q), setup.q, 4.0 * s, s,
                                                           setup.bin_pixels())
    around = around.reshape(obs.shape[0], -1)[:, setup.index]
    n_around = n_around.reshape(obs.shape[0], -1)[:, setup.index]
    level = np.maximum(mu - sl_term, 1e-6)
    with np.errstate(invalid="ignore", divide="ignore"):
        n_a = np.maximum(n_around, 1.0)
        streak = np.isfinite(around) & (around - level > 3.0 * np.sqrt((level + 1.0 / n_a) / n_a))
    around = np.where(streak, around, np.nan)

    def floored(m: np.ndarray) -> np.ndarray:
        return np.where(np.isfinite(around), np.maximum(m, around), m)

    # point by point (`poisson_deviance_gain`): a fit whose scale ran away where its term is nearly
    # zero on the fit points can put model values of 1e14 elsewhere, and the difference of two
    # deviance sums near 1e19 is then rounding noise of thousands of units
    sl_gain = poisson_deviance_gain(floored(mu - sl_term), floored(mu), y, valid, setup.weight)
    al_gain = poisson_deviance_gain(mu - scales[:, al:al + 1] * comps[:, al], mu, y, valid, setup.weight)
    return sl_gain, al_gain


def sl_width_ceiling(setup: FitSetup, settings: FitSettings) -> float:
    """The SL radial width's ceiling (1/A) in the fit (`FitSetup.bounds`), inf where it is held.

    A refined width on its ceiling is only a lower bound: the SL gain's radial surroundings
    (`term_gains`), placed by that width, cannot tell such a term from a broad feature (a streak,
    a shadow's edge), so `neighbour_pass` gives no fit to a frame without one on such a term.
    """
    return float(setup.bounds(settings.refine.vary).get("sl_radial_width", (0.0, np.inf))[1])


def start_key(r: dict, k: int) -> bytes:
    """What a start from row ``k`` of the fits ``r`` depends on (`params_from_row`), as bytes."""
    names = ("orientation_matrix", "lattice_constant", "sl_scale", "diffuse_scale", "al_scale", "background",
             "disorder_deg", "relationship") + tuple(w for w in store.WIDTHS if w in r)
    return b"".join(np.ascontiguousarray(np.asarray(r[name][k], np.float64)).tobytes() for name in names)


class FramePoints:
    """The fit points of some frames, kept while their polar images are read a batch at a time.

    ``values`` (len(frames), P): float32 as long as every batch put is exactly float32 (reduced
    polar images are), so nothing is rounded; float64 from the first batch that is not.
    """

    def __init__(self, frames: Sequence[int], index: np.ndarray):
        self.index = np.asarray(index)
        self.row = {int(i): j for j, i in enumerate(frames)}
        self.values = np.full((len(frames), self.index.size), np.nan, np.float32)

    def of_polar(self, polar: np.ndarray) -> np.ndarray:
        """(B, P) fit points of (B, C, Q) polar images."""
        return polar.reshape(len(polar), -1)[:, self.index]

    def put(self, start: int, pts: np.ndarray) -> None:
        """Store the fit points ``pts`` of the frames from position ``start`` of ``frames`` on."""
        if self.values.dtype == np.float32 and not np.array_equal(pts.astype(np.float32), pts, equal_nan=True):
            self.values = self.values.astype(np.float64)
        self.values[start:start + len(pts)] = pts

    def rows(self, frames: Sequence[int]) -> np.ndarray:
        """(len(frames), P) float64 fit points of ``frames`` (scan frame numbers)."""
        return self.values[[self.row[int(i)] for i in frames]].astype(np.float64)


def neighbour_pass(fits_path: str | Path, results: ReducedScan | str | Path, setup: FitSetup,
                   settings: FitSettings = FitSettings(), progress: bool = True,
                   near: np.ndarray | None = None, research: bool | None = None,
                   memo: dict | None = None, timings: dict | None = None) -> list[int]:
    """Refit doubtful frames from their scan neighbours' orientations; returns the improved frames.

    Parameters
    ----------
    fits_path : file with ``/entry/fits`` (rewritten in place).
    results : the reduced scan (polar images, scan positions; `xmodel.reduced`).
    near : if given, only frames with a neighbour in it are considered (the frames the previous
        pass changed: nothing else has a new start to try).
    research : also search each doubtful frame again, at the lattice constants of `lattice_grid`
        with ``research_n_refine`` candidates refined (default: when ``near`` is None, the first pass).
    memo : refinements of neighbour starts from earlier passes (filled here): a start from a
        neighbour whose fit has not changed since is not refined again (the same start on the
        same frame gives the same fit).
    timings : if given, seconds spent per stage are added to it: ``research_<stage>`` (the
        stages of `fits.scan.frames.fit_frames`), ``neighbour_starts``, ``neighbour_mixed`` (SL and
        AL gains, mixed flag, writing).

    Notes
    -----
    A frame is doubtful (`doubtful`) when its SL ring significance reaches
    ``neighbour_min_significance``, it has an ok neighbour, and either its status is not ok or most
    of its ok neighbours' SL orientations differ from its own by more than ``agree_deg``. Each
    distinct orientation of its ok neighbours (up to ``max_neighbour_starts``, with their lattice
    constant, scales, disorder and NC relationship) starts a refinement
    (`fits.scan.starts.refine_starts`), and the re-search (`fits.scan.frames.fit_frames` on the
    grid) gives more; it runs first, and a frame it gives a better ok fit that agrees with most of
    its ok neighbours skips the neighbour starts. A neighbour start counts only if its refinement
    converges, so one that cannot end below the frame's deviance plus ``replace_margin`` (nor
    below the re-search's) could not replace the frame's fit and is given up
    (`fits.scan.starts.refine_starts`, `fits.batch.GiveUp`); the re-search's refinements run to
    the end (a frame whose best one did not converge can still be flagged mixed and used). The
    lowest Poisson deviance
    (`fits.scan.starts.choose`) replaces the frame's fit by the margin and near-tie rules of
    `fits.scan.starts.replaces` (``replace_margin``; in a near tie, e.g. a pseudo-symmetric twin,
    the fit that agrees with most of the ok neighbours). A frame that had no fit must also need
    its SL term: the deviance gain of the SL peaks (`term_gains`) reaches ``sl_min_gain``, so a
    neighbour's orientation never turns noise or WAXS-only signal into an SL fit; where the fit
    refines ``sl_radial_width``, that width must also end below its ceiling (`FitSetup.bounds`),
    for the gain's radial surroundings are placed by it. This rule sorts the candidates of such a
    frame before their deviances do: one it refuses neither wins the frame nor sets the deviance
    a neighbour start must end below (a re-search fit whose wide SL term takes up the background
    can lie far below a start that finds the frame's weak SL peaks). A refitted
    frame keeps the neighbour's configuration only if its own AL term gains ``al_min_gain``.
    Every deviance difference here (``replace_margin``, ``sl_min_gain``, ``al_min_gain``) is
    divided by the winning fit's dispersion ``max(phi, 1)`` (quasi-likelihood, McCullagh & Nelder,
    Generalized Linear Models, 2nd ed. 1989, sec. 9.2; `fits.batch.effective_dispersion`).
    Results are rewritten in place, the message saying where the start came from.

    Validation: a frame repaired from its neighbour, one only the re-search can repair, and a
    WAXS-only frame left without a fit (tests/fits/scan/test_neighbours.py); the 31 x 31 twin, 133
    frames changed, none for the worse (docs/performance.md, "Fits").
    """
    ns, ev = settings.neighbours, settings.evidence
    fits_path = Path(fits_path)
    scan = results if isinstance(results, ReducedScan) else open_reduced(results)
    research = near is None if research is None else bool(research)
    r = store.read_fits(fits_path)
    if scan.positions_um is None:
        return []
    nbs = neighbours(scan.positions_um, ns.neighbour_radius_steps)
    frames, pairs = doubtful(r, nbs, settings, None if near is None else set(int(k) for k in near))
    if not frames:
        return []
    # hot pixels masked once per frame, batch by batch as the frames are read: the re-search, every
    # refinement and the term gains see the same points, so their deviances compare with each other.
    # Only the doubtful frames' fit points are kept (`FramePoints`), not their polar images (1.4 MB
    # each, 4 GB for the doubtful frames of a 121 x 121 scan).
    batch = settings.run.batch

    def masked(chunk: list[int]) -> np.ndarray:
        return setup.mask_spikes(scan.polar(chunk), settings.search)

    points = FramePoints(frames, setup.index)
    grid = lattice_grid(setup.a_range, ns.grid_step)
    R, ok = r["orientation_matrix"], r["status"] == FitStatus.OK.code

    def agrees_nb(i: int, R_i: np.ndarray) -> bool:
        return agrees(R_i, R[[int(k) for k in nbs[i] if ok[k]]], ns.agree_deg, ns.agree_share)

    def orientation_of(c: Candidate) -> np.ndarray:
        return np.asarray(c.result["orientation_matrix"][0], np.float64) if c.result is not None else c.orientation

    def usable(c: Candidate) -> bool:
        st_ok = c.status.success or (c.result is not None and c.status is FitStatus.MIXED)
        return st_ok and np.isfinite(c.objective)

    # a frame without a fit takes only a fit whose SL term it needs: the deviance gain of the SL
    # peaks over the fit's dispersion reaches sl_min_gain, and, where the fit refines the SL radial
    # width, that width ends below its ceiling (the gain's radial surroundings are placed by it).
    # The rule picks among the candidates, before the deviance does: a re-search fit whose wide SL
    # term takes up the frame's background can lie far below a neighbour start that finds the
    # frame's weak SL peaks, and must neither win the frame nor make that start give up.
    had_fit = np.isfinite(r["objective"])
    ceiling = sl_width_ceiling(setup, settings)
    refused: set[tuple[int, tuple]] = set()

    def refuse_unneeded(cs: Sequence[Candidate]) -> None:
        cs = [c for c in cs if not had_fit[c.frame] and usable(c)]
        for s0 in range(0, len(cs), batch):
            chunk = cs[s0:s0 + batch]
            sl, _ = term_gains(setup, stack_params([c.params for c in chunk]), points.rows([c.frame for c in chunk]),
                               spikes_masked=True)
            for c, gain in zip(chunk, sl):
                if (gain / c.dispersion < ev.sl_min_gain
                        or np.isclose(float(np.asarray(c.params.sl_radial_width)), ceiling)):
                    refused.add((c.frame, c.order))

    def admitted(c: Candidate) -> bool:
        return usable(c) and (c.frame, c.order) not in refused

    # what a refit must end below to be of use: the frame's deviance plus the replace margin (a
    # near tie can still win); the dispersion of a refit that ties is the frame's own (their
    # Pearson statistics differ by the deviance difference)
    target = np.where(np.isfinite(r["objective"]),
                      r["objective"] + ns.replace_margin * effective_dispersion(r["dispersion"]), np.inf)
    tm = timings if timings is not None else {}
    clock = time.perf_counter
    cands: list[Candidate] = []
    if research:
        rs_tm: dict = {}
        rs_settings = replace(settings, refine=replace(settings.refine, n_refine=max(ns.research_n_refine,
                                                                                  settings.refine.n_refine)))

        def research_chunk(s0: int) -> tuple[dict, dict, np.ndarray]:
            tm_c: dict = {}
            polar = masked(frames[s0:s0 + batch])
            return fit_frames(polar, setup, rs_settings, lattice_constants=grid,
                              signal_threshold=ns.neighbour_min_significance, timings=tm_c,
                              spikes_masked=True), tm_c, points.of_polar(polar)

        chunks = range(0, len(frames), batch)
        for s0, (rs, tm_c, pts) in in_order(research_chunk, chunks, settings.run.batches_in_flight):
            points.put(s0, pts)
            chunk = frames[s0:s0 + batch]
            for key, v in tm_c.items():
                rs_tm[key] = rs_tm.get(key, 0.0) + v
            for j, i in enumerate(chunk):
                row = {k: v[j:j + 1] for k, v in rs.items()}
                obj = float(rs["objective"][j])
                cands.append(Candidate(frame=i, objective=obj if np.isfinite(obj) else np.inf,
                                       status=FitStatus.from_code(rs["status"][j]),
                                       params=params_from_row(row, 0, setup, settings), source="research",
                                       order=(0, s0 + j), result=row))
            if progress:
                log.info("xmodel fit: neighbour pass, re-searched %d/%d frames on %d lattice constants",
                         min(s0 + batch, len(frames)), len(frames), grid.size)
        refuse_unneeded(cands)
        # a frame the re-search gave a clearly better ok fit that agrees with most of its ok
        # neighbours needs no neighbour starts
        settled = {i for i, c in choose(cands, admitted).items()
                   if c.status is FitStatus.OK and agrees_nb(i, orientation_of(c))
                   and not (np.isfinite(r["objective"][i])
                            and r["objective"][i] <= c.objective + ns.replace_margin * c.dispersion)}
        pairs = [(i, k) for i, k in pairs if i not in settled]
        for key, v in rs_tm.items():
            tm["research_" + key] = tm.get("research_" + key, 0.0) + v
    else:
        for s0 in range(0, len(frames), batch):
            points.put(s0, points.of_polar(masked(frames[s0:s0 + batch])))
    # ... and below the best admitted re-search fit
    for i, c in choose(cands, admitted).items():
        target[i] = min(target[i], c.objective)
    row_of = points.row
    obs = points.values
    memo = {} if memo is None else memo
    keys = [start_key(r, k) for _, k in pairs]
    known: dict[int, Candidate] = {}
    for n, ((i, k), key) in enumerate(zip(pairs, keys)):
        hit = memo.get((i, k))
        # the same start on the same frame: the same fit, or again given up below a lower target
        if hit is not None and hit[0] == key and (not hit[1].fit.gave_up[hit[1].row] or target[i] <= hit[2]):
            known[n] = replace(hit[1], source=f"neighbour frame {k}", order=(1, n))
    todo = [n for n in range(len(pairs)) if n not in known]
    starts = [Start(frame=row_of[pairs[n][0]], params=params_from_row(r, pairs[n][1], setup, settings),
                    source=f"neighbour frame {pairs[n][1]}", order=(1, n), stop_above=float(target[pairs[n][0]]))
              for n in todo]
    t = clock()
    refined = refine_starts(setup, obs, starts, settings, chunk=settings.run.batch, spikes_masked=True)
    tm["neighbour_starts"] = tm.get("neighbour_starts", 0.0) + clock() - t
    if progress and pairs:
        log.info("xmodel fit: neighbour pass, %d starts refined, %d known from the last pass", len(todo),
                 len(known))
    for n, c in zip(todo, refined):
        known[n] = Candidate(frame=frames[c.frame], objective=c.objective, status=c.status, params=c.params,
                             source=c.source, order=c.order, fit=c.fit, row=c.row)
        memo[pairs[n]] = (keys[n], known[n], float(target[pairs[n][0]]))
    refuse_unneeded([known[n] for n in range(len(pairs))])
    cands += [known[n] for n in range(len(pairs))]
    best = choose(cands, admitted)
    # a fit is replaced by one that explains the frame clearly better; near ties are the
    # pseudo-symmetric twins of a pattern (a Conf2 frame and a Conf1 orientation 45 deg away fit
    # some twin frames within 0-2 deviance units), which the frame alone cannot decide: there the
    # grain's continuity does, and the fit that agrees with most of the ok neighbours is kept
    improved = [i for i, c in best.items()
                if replaces(c.objective, r["objective"][i], ns.replace_margin,
                            old_fitted=bool(np.all(np.isfinite(R[i]))),
                            old_agrees=agrees_nb(i, R[i]), new_agrees=agrees_nb(i, orientation_of(c)),
                            dispersion=c.dispersion)]
    if not improved:
        return []
    t = clock()
    # how much each winner's AL term is needed (its SL term was judged above, `refuse_unneeded`),
    # a batch at a time: the radial surroundings are taken on whole polar images (1.4 MB a frame, and
    # their temporaries), and a first pass over a full scan improves thousands of frames
    gains = [term_gains(setup, stack_params([best[i].params for i in improved[s0:s0 + batch]]),
                        points.rows(improved[s0:s0 + batch]), spikes_masked=True)
             for s0 in range(0, len(improved), batch)]
    al_raw = np.concatenate([g[1] for g in gains])
    # a quasi-likelihood ratio: the gain divided by the winner's dispersion max(phi, 1)
    al_gain = al_raw / np.array([best[i].dispersion for i in improved])
    out = store.editable_rows(r)
    from_nb = []
    for j, i in enumerate(improved):
        c = best[i]
        if c.result is None:
            k = pairs[c.order[1]][1]
            # the configuration counts only where the frame's own AL peaks carry it
            conf = r["configuration"][k] or None
            if conf is not None and al_gain[j] < ev.al_min_gain:
                conf = None
            store_fit(out, i, c.fit, c.row, conf)
            out["al_gain"][i] = al_raw[j]
            out["message"][i] = f"{out['message'][i]} (started from {c.source})"
            if conf is None and FitStatus.from_code(out["status"][i]).success:
                out["message"][i] += (f"; no AL peaks above noise (deviance gain of the AL term over the "
                                      f"dispersion {al_gain[j]:.1f} < "
                                      f"{ev.al_min_gain:g}): configuration and disorder not determined")
            out["configuration_margin"][i] = np.nan          # the other configuration was not refitted
            from_nb.append(j)
        else:
            for k, v in c.result.items():
                if k in out:
                    out[k][i] = v[0]
            out["message"][i] = f"{out['message'][i]} (searched again on {grid.size} lattice constants)"
    refit = [improved[j] for j in from_nb]
    for s0 in range(0, len(refit), batch):            # read again, a batch at a time
        idx = refit[s0:s0 + batch]
        flag_mixed(out, np.array(idx), masked(idx), setup, stack_params([best[i].params for i in idx]), settings,
                   spikes_masked=True)
    idx = np.array(improved)
    report_angles(out, idx, settings.search.zones)
    store.write_frames(fits_path, idx, out)
    tm["neighbour_mixed"] = tm.get("neighbour_mixed", 0.0) + clock() - t
    return sorted(improved)
