"""Neighbour passes of a scan fit: doubtful frames refitted from their scan neighbours.

Orientation fits are multi-modal, and a boundary point's few SL peaks are often matched by
several orientations (`fits.search`); the SL rotates continuously across a boundary (paper,
Fig. 3-4: 8-14 deg over microns), so a neighbour's fitted orientation is a start in the right
basin. Compressed boundary points also put their lattice constant far from the radial profile's
maxima (fcc shells alias, `fits.search.lattice_constant_score`), so the first pass also searches
every doubtful frame again on a grid of lattice constants (`lattice_grid`). The clearly lower
Poisson deviance wins, and in a near tie the fit that agrees with the neighbours. `neighbour_passes` runs them after the main pass of
`fits.scan_fit.fit_scan` (resumable: ``/entry/fits`` attribute ``neighbour_passes_done``).
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import h5py
import jax
import numpy as np

from fits.linear import COMPONENTS, _poisson_deviance_np, component_images
from fits.mixed import flag_mixed
from fits.scan_fit import (FIT_DATASETS, STDERR_OF, FitSettings, FitSetup, _frame_checks, _stack,
                           decompose_orientation, fit_frames, params_from_row, read_fits, store_fit)
from fits.status import FitStatus
from xmodel import orientation

#: Poisson deviance decrease a refit needs to replace a frame's fit (a likelihood ratio of
#: exp(5); chi2.isf(0.01, 2) = 9.2)
REPLACE_MARGIN = 10.0
#: distinct neighbour orientations tried per doubtful frame (the ok neighbours with the lowest deviance)
MAX_NEIGHBOUR_STARTS = 3
#: misorientation (deg) within which a frame agrees with a neighbour (one boundary step can rotate
#: the SL by several degrees; wrong fits are typically 30-60 deg off)
AGREE_DEG = 5.0
#: relative spacing of the lattice-constant grid of the re-search (fcc shells are 5-15 % apart)
GRID_STEP = 0.02


def lattice_grid(a_range: tuple[float, float], step: float = GRID_STEP) -> np.ndarray:
    """Lattice constants (A) from ``a_range[0]`` to ``a_range[1]`` spaced by the factor ``1 + step``.

    The template search (`fits.search.search_orientations`) tolerates about 1-2 % of error in
    ``a`` (the ring extraction's radial width), so a 2 % grid always holds a usable value, also
    where the radial profile's maxima are all aliases of the true ``a``.
    """
    lo, hi = float(min(a_range)), float(max(a_range))
    if not (lo > 0 and np.isfinite(hi)) or step <= 0:
        raise ValueError(f"lattice_grid: need 0 < a_min <= a_max and step > 0, got a_range {a_range!r}, "
                         f"step {step!r}.")
    n = int(np.floor(np.log(hi / lo) / np.log1p(step) + 1e-9)) + 1
    return lo * (1.0 + step) ** np.arange(n)


def neighbours(positions_um: np.ndarray) -> list[np.ndarray]:
    """Indices of the scan points within 1.5 steps of each point (itself excluded)."""
    from scipy.spatial import cKDTree

    pos = np.asarray(positions_um, float)
    tree = cKDTree(pos)
    d, _ = tree.query(pos, k=2)
    step = float(np.median(d[:, 1])) if pos.shape[0] > 1 else 1.0
    return [np.array([k for k in nb if k != i], int) for i, nb in enumerate(tree.query_ball_point(pos, 1.5 * step))]


def _agrees(R_i: np.ndarray, R_nb: np.ndarray) -> bool:
    """True when most of the neighbour orientations ``R_nb`` (n, 3, 3) lie within `AGREE_DEG` of ``R_i``."""
    if len(R_nb) == 0 or not np.all(np.isfinite(R_i)):
        return False
    return bool(np.mean(np.degrees(np.atleast_1d(orientation.misorientation_angle(R_i, R_nb))) > AGREE_DEG) <= 0.5)


def neighbour_passes(out: Path, results: Path, setup: FitSetup, settings: FitSettings, progress: bool,
                     n: int) -> None:
    """Run the remaining `neighbour_pass` es once every frame is done (resumable by attribute)."""
    with h5py.File(out, "r") as f:
        all_done = int(f["entry/fits"].attrs["frames_done"]) >= n
        passes_done = int(f["entry/fits"].attrs.get("neighbour_passes_done", 0))
    if not all_done:
        return
    changed = None                          # the first pass (or a resumed one) looks at every frame
    for k in range(passes_done, settings.neighbour_passes):
        changed = neighbour_pass(out, results, setup, settings, progress, near=changed, research=k == 0)
        with h5py.File(out, "a") as f:
            f["entry/fits"].attrs["neighbour_passes_done"] = k + 1 if changed else settings.neighbour_passes
        if progress:
            print(f"\rxmodel fit: neighbour pass {k + 1}: {len(changed)} frames improved", file=sys.stderr)
        if not changed:
            break


def _doubtful(r: dict, nbs: list[np.ndarray], settings: FitSettings, changed: set | None
              ) -> tuple[list[int], list[tuple[int, int]]]:
    """Doubtful frames and the (frame, neighbour) starts to try for each (see `neighbour_pass`)."""
    R = r["orientation_matrix"]
    ok = r["status"] == FitStatus.OK.code
    # weak rings too: the SL deviance gain decides whether a neighbour's orientation explains SL
    # signal the ring search missed (empty frames of the twin score below 1.6)
    has = np.isfinite(r["significance"]) & (r["significance"] >= settings.neighbour_min_significance) & \
        (r["status"] != FitStatus.BAD_DATA.code)
    frames, pairs = [], []
    for i in np.flatnonzero(has):
        if changed is not None and not changed.intersection(nbs[i].tolist()):
            continue
        cand = [int(k) for k in nbs[i] if ok[k]]
        if not cand:
            continue
        # an ok frame that agrees with most of its ok neighbours is left alone
        if ok[i] and _agrees(R[i], R[cand]):
            continue
        mis = np.degrees(np.atleast_1d(orientation.misorientation_angle(R[i], R[cand]))) if ok[i] else None
        frames.append(int(i))
        kept: list[int] = []
        for c in np.argsort(r["objective"][cand]):
            k = cand[c]
            if mis is not None and mis[c] <= 1.0:
                continue
            if all(np.degrees(orientation.misorientation_angle(R[k], R[m])) > 1.0 for m in kept):
                kept.append(k)
        pairs += [(int(i), k) for k in kept[:MAX_NEIGHBOUR_STARTS]]
    return frames, pairs


def _term_gains(setup: FitSetup, params, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Poisson deviance gains (n,) of the SL and of the AL term of the fitted ``params`` (stacked).

    ``D(model without the term) - D(model)`` on the fit points: how much the frame's data need the
    term (a likelihood ratio, Wilks 1938, doi:10.1214/aoms/1177732360).
    """
    comps = component_images(setup.model, params)                             # (n, 4, P)
    scales = np.stack([np.asarray(getattr(params, c), np.float64).reshape(-1) for c in COMPONENTS], 1)
    mu = np.einsum("nc,ncp->np", scales, comps)
    valid, _ = _frame_checks(obs, setup.weight)
    y = np.where(valid, obs, 0.0)
    d = _poisson_deviance_np(mu, y, valid, setup.weight)
    gain = [_poisson_deviance_np(mu - scales[:, c:c + 1] * comps[:, c], y, valid, setup.weight) - d
            for c in (COMPONENTS.index("sl_scale"), COMPONENTS.index("al_scale"))]
    return gain[0], gain[1]


def neighbour_pass(fits_path: str | Path, results: str | Path, setup: FitSetup,
                   settings: FitSettings = FitSettings(), progress: bool = True,
                   near: np.ndarray | None = None, research: bool | None = None) -> list[int]:
    """Refit doubtful frames from their scan neighbours' orientations; returns the improved frames.

    Parameters
    ----------
    fits_path : file with ``/entry/fits`` (rewritten in place).
    results : file with ``/entry/reduction`` (polar images, scan positions).
    near : if given, only frames with a neighbour in it are considered (the frames the previous
        pass changed: nothing else has a new start to try).
    research : also search each doubtful frame again, at the lattice constants of `lattice_grid`
        with ``settings.n_refine`` raised to 2 (default: when ``near`` is None, the first pass).

    Notes
    -----
    A frame is doubtful when its SL ring significance reaches
    ``settings.neighbour_min_significance``, it has an ok neighbour, and either its status is not
    ok or most of its ok neighbours' SL orientations differ from its own by more than 5 deg
    (`AGREE_DEG`). Each distinct orientation of its ok neighbours (up to
    `MAX_NEIGHBOUR_STARTS`, with their lattice constant, scales, disorder and NC relationship)
    starts a batched refinement (`fits.batch.fit_batch`), and the re-search
    (`fits.scan_fit.fit_frames` on the grid) gives more; it runs first, and a frame it gives a
    better ok fit that agrees with most of its ok neighbours skips the neighbour starts. The
    lowest Poisson deviance wins if it is below the frame's own by ``REPLACE_MARGIN`` (or the
    frame had no fit); within that margin (a near tie, e.g. a pseudo-symmetric twin) it wins if
    it agrees with most of the ok neighbours and the frame's own fit does not. A frame that had
    no fit must also need its SL term: the deviance gain of the SL peaks (`_term_gains`) reaches
    ``settings.sl_min_gain``, so a neighbour's orientation never turns noise or WAXS-only signal
    into an SL fit. A refitted frame keeps the neighbour's
    configuration only if its own AL term gains ``al_min_gain``.
    Results are rewritten in place, the message saying where the start came from.

    Validation: a frame repaired from its neighbour, one only the re-search can repair, and a
    WAXS-only frame left without a fit (tests/fits/test_neighbours.py); the 31 x 31 twin, 133
    frames changed, none for the worse (docs/performance.md, "Fits").
    """
    from fits.batch import fit_batch

    fits_path, results = Path(fits_path), Path(results)
    research = near is None if research is None else bool(research)
    r = read_fits(fits_path)
    with h5py.File(results, "r") as f:
        if "entry/reduction/positions" not in f:
            return []
        nbs = neighbours(np.asarray(f["entry/reduction/positions"], float))
        frames, pairs = _doubtful(r, nbs, settings, None if near is None else set(int(k) for k in near))
        if not frames:
            return []
        polar = {i: np.asarray(f["entry/reduction/polar"][i], np.float64) for i in frames}
    t = setup.template
    a0 = float(t.lattice_constant)
    a_range = (settings.a_range_rel[0] * a0, settings.a_range_rel[1] * a0)
    grid = lattice_grid(a_range)
    R, ok = r["orientation_matrix"], r["status"] == FitStatus.OK.code

    def agrees(i: int, R_i: np.ndarray) -> bool:
        return _agrees(R_i, R[[int(k) for k in nbs[i] if ok[k]]])

    # candidates per frame: (objective, source, payload)
    best: dict[int, tuple] = {}
    if research:
        rs_settings = replace(settings, n_refine=max(2, settings.n_refine))
        for s0 in range(0, len(frames), settings.batch):
            chunk = frames[s0:s0 + settings.batch]
            rs = fit_frames(np.stack([polar[i] for i in chunk]), setup, rs_settings, lattice_constants=grid,
                            signal_threshold=settings.neighbour_min_significance)
            for j, i in enumerate(chunk):
                st = FitStatus.from_code(rs["status"][j])
                if (st.success or st is FitStatus.MIXED) and np.isfinite(rs["objective"][j]) and \
                        rs["objective"][j] < best.get(i, (np.inf,))[0]:
                    best[i] = (float(rs["objective"][j]), "research", {k: v[j:j + 1] for k, v in rs.items()})
            if progress:
                print(f"\rxmodel fit: neighbour pass, re-searched {min(s0 + settings.batch, len(frames))}/"
                      f"{len(frames)} frames on {grid.size} lattice constants", end="", file=sys.stderr, flush=True)
    if research and best:
        # a frame the re-search gave a clearly better ok fit that agrees with most of its ok
        # neighbours needs no neighbour starts
        settled = {i for i, (o, _, row) in best.items()
                   if row["status"][0] == FitStatus.OK.code and agrees(i, row["orientation_matrix"][0])
                   and not (np.isfinite(r["objective"][i]) and r["objective"][i] <= o + REPLACE_MARGIN)}
        pairs = [(i, k) for i, k in pairs if i not in settled]
    for s0 in range(0, len(pairs), settings.batch):
        chunk = pairs[s0:s0 + settings.batch]
        obs = np.stack([polar[i].reshape(-1)[setup.index] for i, _ in chunk])
        valid, bad = _frame_checks(obs, setup.weight)
        w = np.where(valid & ~bad[:, None], setup.weight[None, :], 0.0)
        fb = fit_batch(np.where(valid, obs, 0.0), w, setup.model,
                       _stack([params_from_row(r, k, t, a_range) for _, k in chunk]),
                       list(settings.vary), bounds={"lattice_constant": a_range},
                       max_iter=settings.max_iter, tol=settings.tol)
        for row, (i, k) in enumerate(chunk):
            if fb.status[row].success and np.isfinite(fb.objective[row]) and \
                    fb.objective[row] < best.get(i, (np.inf,))[0]:
                best[i] = (float(fb.objective[row]), "neighbour", (fb, row, k))
        if progress:
            print(f"\rxmodel fit: neighbour pass, {min(s0 + settings.batch, len(pairs))}/{len(pairs)} starts",
                  end="", file=sys.stderr, flush=True)
    # a fit is replaced by one that explains the frame clearly better; near ties are the
    # pseudo-symmetric twins of a pattern (a Conf2 frame and a Conf1 orientation 45 deg away fit
    # some twin frames within 0-2 deviance units), which the frame alone cannot decide: there the
    # grain's continuity does, and the fit that agrees with most of the ok neighbours is kept
    def orientation_of(i: int) -> np.ndarray:
        _, source, payload = best[i]
        if source == "neighbour":
            fb, row, _ = payload
            return np.asarray(jax.tree_util.tree_map(lambda x: x[row], fb.params).sl_orientation(), np.float64)
        return np.asarray(payload["orientation_matrix"][0], np.float64)

    improved = []
    for i, (o, *_) in best.items():
        old = r["objective"][i]
        if not np.isfinite(old) or o < old - REPLACE_MARGIN:
            improved.append(i)
        elif o <= old + REPLACE_MARGIN and np.all(np.isfinite(R[i])) and not agrees(i, R[i]) and \
                agrees(i, orientation_of(i)):
            improved.append(i)
    if not improved:
        return []
    # the fitted parameters of each winner, and how much its SL and AL terms are needed
    params = _stack([jax.tree_util.tree_map(lambda x: x[best[i][2][1]], best[i][2][0].params)
                     if best[i][1] == "neighbour" else params_from_row(best[i][2], 0, t, a_range)
                     for i in improved])
    obs = np.stack([polar[i].reshape(-1)[setup.index] for i in improved])
    sl_gain, al_gain = _term_gains(setup, params, obs)
    out = {k: (v.astype(object) if v.dtype.kind == "U" else v.copy()) for k, v in r.items()
           if isinstance(v, np.ndarray)}
    kept, from_nb = [], []
    for j, i in enumerate(improved):
        had_fit = np.isfinite(r["objective"][i])
        if not had_fit and sl_gain[j] < settings.sl_min_gain:
            continue                                   # no SL peaks in it after all (noise, WAXS only)
        kept.append(j)
        _, source, payload = best[i]
        if source == "neighbour":
            fb, row, k = payload
            # the configuration counts only where the frame's own AL peaks carry it
            conf = r["configuration"][k] or None
            if conf is not None and al_gain[j] < settings.al_min_gain:
                conf = None
            store_fit(out, i, fb, row, conf)
            out["al_gain"][i] = al_gain[j]
            out["message"][i] = f"{out['message'][i]} (started from neighbour frame {k})"
            if conf is None and FitStatus.from_code(out["status"][i]).success:
                out["message"][i] += (f"; no AL peaks above noise (deviance gain of the AL term {al_gain[j]:.1f} < "
                                      f"{settings.al_min_gain:g}): configuration and disorder not determined")
            out["configuration_margin"][i] = np.nan          # the other configuration was not refitted
            from_nb.append(j)
        else:
            for k, v in payload.items():
                if k in out:
                    out[k][i] = v[0]
            out["message"][i] = f"{out['message'][i]} (searched again on {grid.size} lattice constants)"
    if not kept:
        return []
    done = [improved[j] for j in kept]
    if from_nb:
        idx = np.array([improved[j] for j in from_nb])
        flag_mixed(out, idx, np.stack([polar[i] for i in idx]), setup,
                   jax.tree_util.tree_map(lambda x: x[np.array(from_nb)], params), a_range, settings)
    idx = np.array(done)
    ang = decompose_orientation(out["orientation_matrix"][idx], list(settings.zones))
    for key in ("zone_axis", "tilt_deg", "tilt1_deg", "tilt2_deg", "inplane_deg"):
        out[key][idx] = ang[key]
    with h5py.File(fits_path, "a") as f:
        g = f["entry/fits"]
        order = np.sort(idx)
        for key in list(FIT_DATASETS) + [k + "_stderr" for k in STDERR_OF]:
            if key in g:
                g[key][order] = out[key][order]
    return sorted(done)
