"""The ``xmodel`` command line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("configs", nargs="+", metavar="CONFIG",
                   help="TOML files merged in order (experiment, then sample)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override one value, parsed as TOML (e.g. superlattice.beam_direction=[1,1,2])")
    p.add_argument("--binning", type=int, default=None, help="bin the detector by this factor")


def _load(args):
    from xmodel.config import load_config
    return load_config(args.configs, args.overrides)


def cmd_simulate(args) -> int:
    import numpy as np

    from xmodel.experiment import beam_center_px
    from xmodel.figures import miller_label, plot_pattern
    from xmodel.simulate import Simulation, simulate_counts, write_pattern

    cfg = _load(args)
    sim = Simulation.from_config(cfg, binning=args.binning)
    image = sim.expected()
    noisy = args.counts is not None or args.seed is not None
    if noisy:
        image = simulate_counts(image, ~sim.experiment.mask, args.counts, args.seed)
    refl = sim.reflections()
    write_pattern(args.out, image, sim, noisy=noisy, seed=args.seed, counts=args.counts, reflections=refl)
    print(f"wrote {args.out} ({image.shape[0]} x {image.shape[1]}, max {float(np.max(image)):.4g} counts)")
    if args.png:
        plot_pattern(image, sim.experiment.mask, beam_center_px(sim.experiment.geometry), args.png,
                     reflections=refl, title=f"{cfg.name}: beam along " + miller_label(cfg.superlattice.beam_direction, "SL")
                     + f", {cfg.atomic_lattice.configuration}")
        print(f"wrote {args.png}")
    return 0


def cmd_peaks(args) -> int:
    from xmodel.peaks import format_table
    from xmodel.simulate import Simulation

    cfg = _load(args)
    sim = Simulation.from_config(cfg, binning=args.binning)
    rows = sim.reflections(min_relative=args.min_relative, include_all=args.all)
    if args.json:
        keys = ("lattice", "hkl", "q", "chi", "intensity", "ewald_distance", "row", "col", "on_detector")
        print(json.dumps([{k: r[k] for k in keys} for r in rows], indent=1))
    else:
        print(format_table(rows))
    return 0


def cmd_demo(args) -> int:
    from xmodel.demo import run_demo
    run_demo(Path(args.out), binning=args.binning)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xmodel", description=__doc__.strip().split("\n")[0] +
                                     " — scanning nanodiffraction of nanocrystal superlattices")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="simulate one pattern from TOML configs")
    _add_config_args(p)
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--png", help="also write a figure (log scale, SAXS inset, labelled reflections)")
    p.add_argument("--counts", type=float, default=None, help="total expected counts (then Poisson noise)")
    p.add_argument("--seed", type=int, default=None, help="seed of the Poisson noise (implies noise)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("peaks", help="list the reflections that light up on the detector")
    _add_config_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--all", action="store_true", help="include reflections that do not light up")
    p.add_argument("--min-relative", type=float, default=1e-2,
                   help="minimum peak height relative to the brightest of the same lattice (default 0.01)")
    p.set_defaults(func=cmd_peaks)

    p = sub.add_parser("demo", help="simulate the paper's five domains and write a report")
    p.add_argument("--out", default="xmodel-demo", help="output directory (default ./xmodel-demo)")
    p.add_argument("--binning", type=int, default=None, help="bin the detector (faster preview)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"xmodel {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
