"""``xmodel qmap``: maps and line profiles of the SL 200/311 peak position (Fig. 3, S7)."""
from __future__ import annotations

import json
import logging

from xmodel.commands._common import add_command, add_json_arg, parse_pair

log = logging.getLogger(__name__)


def run(args) -> int:
    from pathlib import Path

    import numpy as np

    from fits.analyses.qmap import qmap_scan
    from fits.status import LATTICE_OUTCOMES, FitStatus
    from xmodel.outputs import prepare_file, prepare_folder

    results = Path(args.results)
    if not results.exists():
        raise FileNotFoundError(f"results file {results} does not exist; run `xmodel reduce` first.")
    prepare_file(results, f"RESULTS (written in place: /entry/qmap/{args.family})", hdf5=True)
    prepare_folder(args.figures if args.figures is not None else results.parent, "--figures")
    if (args.start is None) != (args.end is None):
        raise ValueError("give both --from X0,Y0 and --to X1,Y1 (um) for a line profile, or neither.")
    line = None if args.start is None else (parse_pair(args.start, "--from"), parse_pair(args.end, "--to"))
    window = None
    if args.window is not None:
        lo, hi = parse_pair(args.window, "--window", what="Q_LO,Q_HI in 1/A", example="0.130,0.160")
        window = (lo, hi)
    res = qmap_scan(args.results, args.family, a_nominal=args.a_nominal, window=window,
                    background=args.background, line=line, figures=args.figures, fits_file=args.fits)
    fits = res["fits"]
    counts = {s.value: int(np.count_nonzero(fits["status"] == s.code)) for s in LATTICE_OUTCOMES}
    n_angles = int(np.count_nonzero(fits["decided_by_angles"]))
    n_prior = int(np.count_nonzero(fits["decided_by_prior"]))
    summary = {"family": args.family, "q_window": list(res["window"]), "status_counts": counts,
               "decided_by_angles": n_angles, "decided_by_fit": n_prior,
               "median_q": float(np.nanmedian(fits["center"])) if counts[FitStatus.OK.value] else None,
               "figures": [str(p) for p in res["figures"]]}
    if res["line"] is not None:
        ln = res["line"]
        summary["line"] = {"distance_um": ln.distance_um.tolist(),
                           "q": [None if not np.isfinite(v) else float(v) for v in ln.values["q"]],
                           "lattice_constant": [None if not np.isfinite(v) else float(v)
                                                for v in ln.values["lattice_constant"]]}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        lo, hi = res["window"]
        print(f"q_{args.family}: window {lo:.4f}..{hi:.4f} 1/A; " +
              ", ".join(f"{v} {k}" for k, v in counts.items()) +
              f" ({n_angles} of the ok decided by the angles between Friedel pairs, {n_prior} by the model "
              f"fits)")
        if summary["median_q"] is not None:
            print(f"median q = {summary['median_q']:.4f} 1/A; written to {args.results}:/entry/qmap/{args.family}")
        for p in res["figures"]:
            log.info(f"wrote {p}")
    return 0


def add_parser(sub) -> None:
    p = add_command(sub, "qmap", "maps and line profiles of the SL 200/311 peak position (Fig. 3, S7)")
    p.add_argument("results", metavar="RESULTS", help="reduced scan (HDF5); results go to /entry/qmap/<family>")
    p.add_argument("--family", required=True, choices=["200", "311"], help="SL peak family")
    p.add_argument("--a-nominal", type=float, default=150.0,
                   help="nominal lattice constant (A) the default q window follows")
    p.add_argument("--window", metavar="Q_LO,Q_HI", help="explicit q window (1/A)")
    p.add_argument("--background", choices=["linear", "constant"], default="linear",
                   help="background under the peak")
    p.add_argument("--from", dest="start", metavar="X0,Y0", help="line start (um)")
    p.add_argument("--to", dest="end", metavar="X1,Y1", help="line end (um)")
    p.add_argument("--figures", metavar="DIR", help="folder for the figures (default: beside RESULTS)")
    p.add_argument("--fits", metavar="FILE",
                   help="results of `xmodel fit` for the same scan: their lattice constants decide "
                        "points whose spots are ambiguous (111 of a vs 200 of 1.155 a)")
    add_json_arg(p, "a summary")
    p.set_defaults(func=run)
