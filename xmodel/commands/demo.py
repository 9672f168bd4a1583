"""``xmodel demo``: the end-to-end demonstration on the paper's sample."""
from __future__ import annotations

from pathlib import Path

from xmodel.commands._common import add_command


def run(args) -> int:
    from fits.analyses.arguments import finite_number, positive_int
    from xmodel.demo import run_demo
    from xmodel.outputs import prepare_folder

    if args.binning is not None:
        positive_int(args.binning, "binning", "--binning", example="4")
    finite_number(args.fit_frames, "fit_frames", "--fit-frames", ge=0, example="100 (0: all)")
    prepare_folder(args.out, "--out")
    run_demo(Path(args.out), binning=args.binning, fit_frames=args.fit_frames)
    return 0


def add_parser(sub) -> None:
    p = add_command(sub, "demo", "simulate the paper's sample end to end and write a report")
    p.add_argument("--out", default="xmodel-demo", metavar="DIR", help="output directory")
    p.add_argument("--binning", type=int, default=None,
                   help="bin the detector of the five single patterns (faster preview)")
    p.add_argument("--fit-frames", type=int, default=0,
                   help="fit about this many frames of the demo scan, evenly spread (0: all; the "
                        "neighbour passes of the fit need the whole map)")
    p.set_defaults(func=run)
