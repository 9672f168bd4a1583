"""``xmodel peaks``: the reflections that light up on the detector."""
from __future__ import annotations

import json

from xmodel.commands._common import add_command, add_config_args, add_json_arg, load


def run(args) -> int:
    from fits.analyses.arguments import finite_number
    from xmodel.peaks import format_table
    from xmodel.simulate import Simulation

    finite_number(args.min_relative, "min_relative", "--min-relative", ge=0, le=1,
                  unit="of the brightest peak of the lattice", example="0.01")
    cfg = load(args)
    sim = Simulation.from_config(cfg, binning=args.binning)
    rows = sim.reflections(min_relative=args.min_relative, include_all=args.all)
    if args.json:
        keys = ("lattice", "hkl", "q", "chi", "intensity", "ewald_distance", "row", "col", "on_detector")
        print(json.dumps([{k: r[k] for k in keys} for r in rows], indent=1))
    else:
        print(format_table(rows))
    return 0


def add_parser(sub) -> None:
    p = add_command(sub, "peaks", "list the reflections that light up on the detector")
    add_config_args(p)
    p.add_argument("--all", action="store_true", help="include reflections that do not light up")
    p.add_argument("--min-relative", type=float, default=1e-2,
                   help="minimum peak height relative to the brightest of the same lattice")
    add_json_arg(p, "the reflections (a list)")
    p.set_defaults(func=run)
