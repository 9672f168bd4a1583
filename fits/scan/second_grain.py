"""Mixed frames found through the scan neighbours: a second grain's orientation beside the fit.

The residual tests of `fits.scan.mixed` look for peaks a frame's fit leaves. A fit can hide a
second grain instead: on a frame with two grains in the beam it can end at an fcc alias whose
peaks sit on some of both grains' spots, with a disorder broad enough that its arcs cover both
grains' AL arcs, and then little is left off its peaks. Across a grain boundary the second
grain's orientation is known: it is a scan neighbour's. `flag_second_grains`, run once the
neighbour passes are done, adds the SL and AL terms of each such neighbour's fit to the frame's
own and asks, by a nested likelihood ratio, whether the data need the neighbour's SL peaks.

A neighbour counts (`second_grain_pairs`) when it is ok, its orientation is its own
neighbourhood's (`fits.scan.neighbours.agrees`: a misfit, an alias that disagrees with the
frames around it, is no grain's orientation) and it lies more than
``evidence.second_grain_deg`` (15 deg) from the frame's fit: a high-angle boundary. Below that
the lattice can bend continuously (low-angle boundaries are arrays of dislocations, Read &
Shockley 1950, Phys. Rev. 78, 275; 15 deg is the usual limit, Humphreys & Hatherly,
Recrystallization and Related Annealing Phenomena, 2nd ed. 2004, sec. 4.1), as across the tilt
and compression gradients of the paper's boundaries, and a copy of the lattice a few degrees
away takes up the misfit of the model's peak shapes on data the model did not make
(docs/validation.md, "Where the mixed flags go").
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fits.batch import effective_dispersion
from fits.scan import results as store
from fits.scan.linear import component_images, linear_scales, poisson_deviance_gain
from fits.scan.mixed import footprint
from fits.scan.neighbours import agrees, neighbours
from fits.scan.settings import FitSettings
from fits.scan.setup import FitSetup
from fits.scan.starts import frame_checks, params_from_row, stack_params
from fits.status import FitStatus
from xmodel import orientation
from xmodel.reduced import ReducedScan, open_reduced

log = logging.getLogger(__name__)


def _deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(orientation.misorientation_angle(a, b)))


def second_grain_pairs(r: dict[str, np.ndarray], nbs: list[np.ndarray], settings: FitSettings
                       ) -> list[tuple[int, int]]:
    """(frame, neighbour) pairs to test: each fitted frame and its ok scan neighbours of another grain.

    A frame is tested when its status is a success or not converged (a frame already mixed is
    left as it is). A neighbour ``k`` is its second grain's candidate when it is ok, agrees with
    most of its own ok neighbours (`fits.scan.neighbours.agrees` at ``neighbours.agree_deg`` and
    ``agree_share``), lies more than ``evidence.second_grain_deg`` from the frame's orientation,
    and more than ``neighbours.distinct_deg`` from the candidates kept before it (lowest
    deviance first), at most ``neighbours.max_neighbour_starts`` of them.
    """
    ns, limit = settings.neighbours, settings.evidence.second_grain_deg
    if not np.isfinite(limit):
        return []
    R, st = r["orientation_matrix"], r["status"]
    ok = st == FitStatus.OK.code
    grain_of = {}                                   # ok frames whose orientation is their neighbourhood's

    def consistent(k: int) -> bool:
        if k not in grain_of:
            around = [int(m) for m in nbs[k] if ok[m]]
            grain_of[k] = bool(around) and agrees(R[k], R[around], ns.agree_deg, ns.agree_share)
        return grain_of[k]

    pairs = []
    for i in range(st.size):
        s = FitStatus.from_code(st[i])
        if not (s.success or s is FitStatus.NOT_CONVERGED) or not np.all(np.isfinite(R[i])):
            continue
        kept: list[int] = []
        for k in sorted((int(k) for k in nbs[i] if ok[k]), key=lambda k: r["objective"][k]):
            if _deg(R[i], R[k]) > limit and consistent(k) and all(_deg(R[k], R[m]) > ns.distinct_deg for m in kept):
                kept.append(k)
        pairs += [(i, k) for k in kept[:ns.max_neighbour_starts]]
    return pairs


def second_grain_gains(setup: FitSetup, own, other, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deviance gains (n,) of a second orientation's SL peaks beside a frame's fit, and their share (n,).

    Parameters
    ----------
    own : stacked fitted `ModelParams` of the n frames.
    other : stacked `ModelParams` of the second orientation for each (a neighbour's fit).
    obs : (n, P) counts per pixel on the fit points (NaN where not measured), hot pixels masked.

    Notes
    -----
    The linear stage (`fits.scan.linear.linear_scales`: non-negative scales, Pearson-weighted)
    fits the frame's four terms (SL peaks, diffuse, AL peaks, background; the fitted shapes) with
    the second orientation's SL and AL terms, and again without its SL term; the gain is the
    Poisson deviance difference of the two (`fits.scan.linear.poisson_deviance_gain`) on the fit
    points off the frame's own fitted SL peaks (`fits.scan.mixed.footprint`), where a misfit of
    their shape would leave its residual. The model without the second SL term is the model with
    its scale 0, so the gain is a likelihood-ratio statistic for that term (Wilks 1938,
    doi:10.1214/aoms/1177732360), to be divided by the frame's dispersion. The share is the
    second SL term's part of the fitted SL intensity (pixel-weighted over the fit points).
    """
    own_c = component_images(setup.model, own)                                      # (n, 4, P)
    sec_c = component_images(setup.model, other, ("sl_scale", "al_scale"))          # (n, 2, P)
    valid, _ = frame_checks(obs, setup.weight)
    y = np.where(valid, obs, 0.0)
    both = np.concatenate([own_c, sec_c], 1)
    without = np.concatenate([own_c, sec_c[:, 1:]], 1)
    s_both, _ = linear_scales(both, obs, valid, setup.weight)
    s_wo, _ = linear_scales(without, obs, valid, setup.weight)
    mu_both = np.einsum("bj,bjp->bp", s_both, both)
    mu_wo = np.einsum("bj,bjp->bp", s_wo, without)
    on = footprint(mu_both, s_both[:, :1] * own_c[:, 0], setup.weight)
    gain = poisson_deviance_gain(mu_wo, mu_both, y, valid & ~on, setup.weight)
    sl_own = (s_both[:, :1] * own_c[:, 0] * setup.weight).sum(axis=1)
    sl_sec = (s_both[:, 4:5] * sec_c[:, 0] * setup.weight).sum(axis=1)
    return gain, sl_sec / np.maximum(sl_own + sl_sec, 1e-30)


def largest_gains(r: dict[str, np.ndarray], pairs: list[tuple[int, int]], scan: ReducedScan, setup: FitSetup,
                  settings: FitSettings) -> dict[int, tuple[float, float, int]]:
    """Frame -> (gain over its dispersion ``max(phi, 1)``, share, neighbour) of its pair with the
    largest `second_grain_gains`, the frames read (hot pixels masked) ``run.batch`` at a time."""
    frames = sorted({i for i, _ in pairs})
    best: dict[int, tuple[float, float, int]] = {}
    batch = settings.run.batch
    for s0 in range(0, len(frames), batch):
        chunk = frames[s0:s0 + batch]
        obs = setup.mask_spikes(scan.polar(chunk), settings.search).reshape(len(chunk), -1)[:, setup.index]
        row = {f: j for j, f in enumerate(chunk)}
        pp = [(i, k) for i, k in pairs if i in row]
        gain, share = second_grain_gains(setup, stack_params([params_from_row(r, i, setup, settings) for i, _ in pp]),
                                         stack_params([params_from_row(r, k, setup, settings) for _, k in pp]),
                                         obs[[row[i] for i, _ in pp]])
        for (i, k), g, sh in zip(pp, gain, share):
            g = float(g / effective_dispersion(r["dispersion"][i]))
            if i not in best or g > best[i][0]:
                best[i] = (g, float(sh), k)
    return best


def flag_second_grains(out: Path, results: ReducedScan | str | Path, setup: FitSetup, settings: FitSettings,
                       progress: bool = True) -> list[int]:
    """Mark MIXED the frames whose data need a neighbour grain's SL peaks beside their fit; returns them.

    Runs once the main pass and the neighbour passes are done, and once: the fits file records it
    (`fits.scan.results.second_grains_done`); a run killed while writing puts the rows back
    (`fits.scan.results.roll_back`) and tests again. For each pair of `second_grain_pairs`, the
    gain of `second_grain_gains` over the frame's dispersion ``max(phi, 1)`` (`largest_gains`); a
    frame whose largest gain reaches ``evidence.sl_min_gain`` (the SL term's evidence threshold of
    the neighbour passes: a neighbour's orientation is no fit of the frame's own, as there) becomes
    `FitStatus.MIXED`, its values those of its own fit, its message naming the neighbour.

    Validation: tests/fits/scan/test_second_grain.py; the twins' mixed frames in
    docs/validation.md ("Where the mixed flags go").
    """
    out = Path(out)
    scan = results if isinstance(results, ReducedScan) else open_reduced(results)
    frames_done, passes_done = store.progress(out)
    if frames_done < scan.n_frames or passes_done < settings.neighbours.neighbour_passes \
            or store.second_grains_done(out):
        return []
    if scan.positions_um is None:
        store.set_second_grains_done(out)
        return []
    r = store.read_fits(out)
    pairs = second_grain_pairs(r, neighbours(scan.positions_um, settings.neighbours.neighbour_radius_steps),
                               settings)
    best = largest_gains(r, pairs, scan, setup, settings)
    limit = settings.evidence.sl_min_gain
    mixed = sorted(i for i, (g, _, _) in best.items() if g >= limit)
    if mixed:
        rows = store.editable_rows(r)
        for i in mixed:
            g, sh, k = best[i]
            st = FitStatus.from_code(rows["status"][i])
            rows["status"][i] = FitStatus.MIXED.code
            rows["message"][i] = (
                f"{FitStatus.MIXED.value}: the SL peaks of neighbour frame {k}'s orientation "
                f"({_deg(r['orientation_matrix'][i], r['orientation_matrix'][k]):.0f} deg away) gain "
                f"{g:.0f} deviance units over the fit's dispersion beside the fit (>= {limit:g}; "
                f"{sh:.0%} of the SL intensity); the values are of the stronger orientation"
                + ("" if st.success else f" and did not converge ({r['message'][i]})"))
        store.write_frames(out, np.array(mixed), rows)
    store.set_second_grains_done(out)
    if progress:
        log.info("xmodel fit: %d of %d frames with a neighbour of another grain need its SL peaks beside "
                 "their fit (mixed)", len(mixed), len(best))
    return mixed
