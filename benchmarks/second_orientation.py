"""The neighbour-grain mixed test on a fitted twin: which frames a neighbour's orientation flags.

Usage:
    python benchmarks/second_orientation.py RESULTS.h5 FITS.h5 TRUTH.h5 [--config TOML ...]
        [--set KEY=VALUE ...] [--min-deg DEG] [--per-frame]

For the fits of a twin, the pairs and gains of `fits.scan.second_grain` (what ``xmodel fit`` runs
after the neighbour passes, `fits.scan.second_grain.flag_second_grains`): for every fitted frame
and each ok scan neighbour of another grain (more than ``--min-deg``, default
``evidence.second_grain_deg``, from the frame's fit; its orientation agreeing with its own
neighbours), the deviance gain of the neighbour's SL peaks beside the frame's fit, over the
frame's dispersion, and their share of the SL intensity. The frame's largest gain is reported.

Prints, for the points the truth calls mixed (already flagged or not) and for the others, how many
reach ``evidence.sl_min_gain`` and the largest gains; ``--per-frame`` lists every frame with the
truth's second fraction. The configs (``--config``, default the P10 experiment) and ``--set``
must be those the fit ran with. On fits made by this version the test has already run: the
frames it flagged are counted as flagged. Figures: docs/validation.md ("Where the mixed flags go").
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import h5py
import numpy as np

from fits.scan import results as store
from fits.scan.neighbours import neighbours
from fits.scan.second_grain import largest_gains, second_grain_pairs
from fits.scan.settings import settings_from_config
from fits.scan.setup import setup_from_reduction
from fits.status import FitStatus
from xmodel.config import load_config
from xmodel.reduced import open_reduced

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", type=Path, help="reduced scan (xmodel reduce)")
    ap.add_argument("fits", type=Path, help="its fits (xmodel fit)")
    ap.add_argument("truth", type=Path, help="the twin's truth.h5")
    ap.add_argument("--config", action="append", default=None, help="configs of the fit (default P10 experiment)")
    ap.add_argument("--set", action="append", default=[], help="config overrides of the fit, KEY=VALUE")
    ap.add_argument("--min-deg", type=float, default=None,
                    help="least misorientation of a neighbour from the frame's fit (deg; default "
                         "evidence.second_grain_deg)")
    ap.add_argument("--per-frame", action="store_true", help="list every frame tested")
    a = ap.parse_args()
    print("command:", shlex.join(["python"] + sys.argv))
    cfg = load_config(a.config or [str(ROOT / "configs/experiment/p10_eiger4m.toml")], a.set)
    settings = settings_from_config(cfg)
    if a.min_deg is not None:
        settings = settings.replace(source="benchmarks/second_orientation.py", second_grain_deg=a.min_deg)
    scan = open_reduced(a.results)
    setup = setup_from_reduction(scan, cfg, settings)
    r = store.read_fits(a.fits)
    with h5py.File(a.truth, "r") as f:
        mixed = np.asarray(f["truth/mixed"], bool)
        share_true = np.asarray(f["truth/second_fraction"], float)
    pairs = second_grain_pairs(r, neighbours(scan.positions_um, settings.neighbours.neighbour_radius_steps), settings)
    best = largest_gains(r, pairs, scan, setup, settings)
    limit = settings.evidence.sl_min_gain
    flagged = r["status"] == FitStatus.MIXED.code
    print(f"second_grain_deg = {settings.evidence.second_grain_deg:g}, sl_min_gain = {limit:g}; "
          f"{len(pairs)} (frame, neighbour) pairs on {len(best)} frames not flagged mixed; the truth's mixed "
          f"points: {int(mixed.sum())}, flagged mixed by the fit: {int((mixed & flagged).sum())}")
    for name, sel in {"mixed": mixed, "not mixed": ~mixed}.items():
        idx = [i for i in best if sel[i]]
        g = np.array([best[i][0] for i in idx])
        top = ", ".join(f"{i}: {best[i][0]:.0f} (share {best[i][1]:.2f}, neighbour {best[i][2]})"
                        for i in sorted(idx, key=lambda i: -best[i][0])[:6])
        print(f"  {name}: {len(idx)} frames with a neighbour of another grain, {int((g >= limit).sum())} reach "
              f"sl_min_gain; largest: {top}")
    if a.per_frame:
        print("frame status mixed second_fraction | gain/phi share neighbour")
        for i in sorted(best):
            g, sh, k = best[i]
            print(f"{i:5d} {int(r['status'][i]):3d} {int(mixed[i])} {share_true[i]:.2f} | {g:9.1f} {sh:.2f} {k}")


if __name__ == "__main__":
    main()
