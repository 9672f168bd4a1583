"""Would a neighbour's orientation, added to a frame's fit, find the mixed frames? A diagnostic.

Usage:
    python benchmarks/second_orientation.py RESULTS.h5 FITS.h5 TRUTH.h5 [--config TOML ...]
        [--set KEY=VALUE ...] [--per-frame]

For every fitted frame (ok, at a bound, not converged or mixed) and each of its ok scan
neighbours whose SL orientation differs from the frame's by more than ``neighbours.agree_deg``
(distinct from each other by ``neighbours.distinct_deg``, at most ``max_neighbour_starts``, as the
neighbour passes choose their starts), the frame's data are fitted by the linear stage
(`fits.scan.linear.linear_scales`, non-negative scales) with the frame's own four fitted terms
plus the neighbour's SL and AL terms (its fitted parameters, unit scales), and again without the
neighbour's SL term. The deviance gain of the neighbour's SL peaks
(`fits.scan.linear.poisson_deviance_gain`, over the frame's dispersion ``max(phi, 1)``, on all fit
points and on those off the frame's own fitted SL peaks, `fits.scan.mixed.footprint`) is a nested
likelihood-ratio statistic for "a second orientation in the beam" (the one-orientation fit is the
two-orientation model with the second SL scale 0; Wilks 1938, doi:10.1214/aoms/1177732360), and
``share`` is the second SL term's part of the fitted SL intensity. The frame's largest gain over
its neighbours is reported.

Prints, for the points the truth calls mixed (already flagged or not) and for the others, how many
reach ``evidence.sl_min_gain`` and the largest gains; ``--per-frame`` lists every frame. The
configs (``--config``, default the P10 experiment) and ``--set`` must be those the fit ran with.
Findings: docs/validation.md ("Where the fit's decisions fail", mixed frames).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import h5py
import numpy as np

from fits.scan import results as store
from fits.scan.linear import component_images, linear_scales, poisson_deviance_gain
from fits.scan.mixed import footprint
from fits.scan.neighbours import neighbours
from fits.scan.settings import settings_from_config
from fits.scan.setup import setup_from_reduction
from fits.scan.starts import frame_checks, params_from_row, stack_params
from fits.status import FitStatus
from xmodel import orientation
from xmodel.config import load_config
from xmodel.reduced import open_reduced

ROOT = Path(__file__).resolve().parents[1]


def pairs_of(r: dict, nbs: list[np.ndarray], settings) -> list[tuple[int, int]]:
    """(frame, neighbour) pairs: fitted frames and their distinct, disagreeing ok neighbours."""
    ns = settings.neighbours
    R, st = r["orientation_matrix"], r["status"]
    ok = st == FitStatus.OK.code

    def deg(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.degrees(orientation.misorientation_angle(a, b)))

    out = []
    for i in range(st.size):
        s = FitStatus.from_code(st[i])
        if not (s.success or s in (FitStatus.NOT_CONVERGED, FitStatus.MIXED)):
            continue
        kept: list[int] = []
        for k in sorted((int(k) for k in nbs[i] if ok[k]), key=lambda k: r["objective"][k]):
            if deg(R[i], R[k]) > ns.agree_deg and all(deg(R[k], R[m]) > ns.distinct_deg for m in kept):
                kept.append(k)
        out += [(i, k) for k in kept[:ns.max_neighbour_starts]]
    return out


def gains(pairs: list[tuple[int, int]], r: dict, scan, setup, settings, chunk: int = 32) -> dict[int, tuple]:
    """Frame -> (gain over phi, gain off the own SL footprint over phi, share, neighbour): the largest."""
    frames = sorted({i for i, _ in pairs})
    row = {f: j for j, f in enumerate(frames)}
    obs_all = setup.mask_spikes(scan.polar(frames), settings.search).reshape(len(frames), -1)[:, setup.index]
    best: dict[int, tuple] = {}
    for s0 in range(0, len(pairs), chunk):
        pp = pairs[s0:s0 + chunk]
        own = component_images(setup.model, stack_params([params_from_row(r, i, setup, settings) for i, _ in pp]))
        nb = component_images(setup.model, stack_params([params_from_row(r, k, setup, settings) for _, k in pp]),
                              ("sl_scale", "al_scale"))
        obs = obs_all[[row[i] for i, _ in pp]]
        valid, _ = frame_checks(obs, setup.weight)
        y = np.where(valid, obs, 0.0)
        full, without = np.concatenate([own, nb], 1), np.concatenate([own, nb[:, 1:]], 1)
        s_full, _ = linear_scales(full, obs, valid, setup.weight)
        s_wo, _ = linear_scales(without, obs, valid, setup.weight)
        mu_full = np.einsum("bj,bjp->bp", s_full, full)
        mu_wo = np.einsum("bj,bjp->bp", s_wo, without)
        on = footprint(mu_full, s_full[:, :1] * own[:, 0], setup.weight)
        g_all = poisson_deviance_gain(mu_wo, mu_full, y, valid, setup.weight)
        g_off = poisson_deviance_gain(mu_wo, mu_full, y, valid & ~on, setup.weight)
        sl_own = (s_full[:, :1] * own[:, 0] * setup.weight).sum(1)
        sl_nb = (s_full[:, 4:5] * nb[:, 0] * setup.weight).sum(1)
        share = sl_nb / np.maximum(sl_own + sl_nb, 1e-30)
        for j, (i, k) in enumerate(pp):
            phi = max(float(r["dispersion"][i]), 1.0)
            cur = (g_all[j] / phi, g_off[j] / phi, share[j], k)
            if i not in best or cur[1] > best[i][1]:
                best[i] = cur
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", type=Path, help="reduced scan (xmodel reduce)")
    ap.add_argument("fits", type=Path, help="its fits (xmodel fit)")
    ap.add_argument("truth", type=Path, help="the twin's truth.h5")
    ap.add_argument("--config", action="append", default=None, help="configs of the fit (default P10 experiment)")
    ap.add_argument("--set", action="append", default=[], help="config overrides of the fit, KEY=VALUE")
    ap.add_argument("--per-frame", action="store_true", help="list every frame")
    a = ap.parse_args()
    print("command:", shlex.join(["python"] + sys.argv))
    cfg = load_config(a.config or [str(ROOT / "configs/experiment/p10_eiger4m.toml")], a.set)
    settings = settings_from_config(cfg)
    scan = open_reduced(a.results)
    setup = setup_from_reduction(scan, cfg, settings)
    r = store.read_fits(a.fits)
    with h5py.File(a.truth, "r") as f:
        mixed = np.asarray(f["truth/mixed"], bool)
        share_true = np.asarray(f["truth/second_fraction"], float)
    pairs = pairs_of(r, neighbours(scan.positions_um, settings.neighbours.neighbour_radius_steps), settings)
    best = gains(pairs, r, scan, setup, settings)
    flagged = r["status"] == FitStatus.MIXED.code
    limit = settings.evidence.sl_min_gain
    print(f"{len(pairs)} (frame, neighbour) pairs on {len(best)} frames; threshold sl_min_gain = {limit:g}")
    groups = {"mixed, not flagged": mixed & ~flagged, "mixed, flagged": mixed & flagged,
              "not mixed": ~mixed}
    for name, sel in groups.items():
        idx = [i for i in best if sel[i]]
        g = np.array([best[i][1] for i in idx])
        top = ", ".join(f"{i}: {best[i][1]:.0f} (share {best[i][2]:.2f})"
                        for i in sorted(idx, key=lambda i: -best[i][1])[:6])
        print(f"  {name}: {len(idx)} frames with a distinct neighbour, {int((g >= limit).sum())} reach the "
              f"threshold off the footprint; largest: {top}")
    if a.per_frame:
        print("frame status mixed second_fraction | gain/phi, off footprint, share, neighbour")
        for i in sorted(best):
            g, go, sh, k = best[i]
            print(f"{i:5d} {int(r['status'][i]):3d} {int(mixed[i])} {share_true[i]:.2f} | {g:9.1f} {go:9.1f} "
                  f"{sh:.2f} {k}")


if __name__ == "__main__":
    main()
