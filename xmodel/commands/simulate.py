"""``xmodel simulate``: one pattern from TOML configs, as NeXus/HDF5 (+ a figure)."""
from __future__ import annotations

import argparse
import json
import logging

from xmodel.commands._common import add_command, add_config_args, add_json_arg, load

log = logging.getLogger(__name__)


def run(args) -> int:
    import numpy as np

    from fits.analyses.arguments import finite_number
    from xmodel.experiment import beam_center_px
    from xmodel.figures import miller_label, plot_pattern, save_figure
    from xmodel.outputs import prepare_file
    from xmodel.simulate import Simulation, simulate_counts, write_pattern

    if args.counts is not None:
        finite_number(args.counts, "counts", "--counts", gt=0, unit="counts on the valid pixels", example="1e6")
    if args.seed is not None:
        finite_number(args.seed, "seed", "--seed", ge=0, example="3")
    prepare_file(args.out, "--out", hdf5=True, example="pattern.h5")
    if args.figure:
        prepare_file(args.figure, "--figure", example="pattern.png")
    cfg = load(args)
    sim = Simulation.from_config(cfg, binning=args.binning)
    image = sim.expected()
    noisy = args.counts is not None or args.seed is not None
    if noisy:
        image = simulate_counts(image, ~sim.experiment.mask, args.counts, args.seed)
    refl = sim.reflections()
    write_pattern(args.out, image, sim, noisy=noisy, seed=args.seed, counts=args.counts, reflections=refl)
    log.info(f"wrote {args.out} ({image.shape[0]} x {image.shape[1]}, max {float(np.max(image)):.4g} counts)")
    if args.figure:
        fig = plot_pattern(image, sim.experiment.mask, beam_center_px(sim.experiment.geometry),
                           q=sim.experiment.geometry.q(), reflections=sim.reflections(include_all=True),
                           title=f"{cfg.name}: beam along " + miller_label(cfg.superlattice.beam_direction, "SL")
                           + f", {cfg.atomic_lattice.configuration}")
        save_figure(fig, args.figure, dpi=110)
        log.info(f"wrote {args.figure}")
    if args.json:
        valid = ~sim.experiment.mask
        print(json.dumps({"out": str(args.out), "figure": args.figure, "shape": list(image.shape),
                          "max_counts": float(np.max(image)), "total_counts": float(np.sum(image[valid])),
                          "n_reflections": {lat: sum(r["lattice"] == lat for r in refl) for lat in ("SL", "AL")}},
                         indent=1))
    return 0


def add_parser(sub) -> None:
    p = add_command(sub, "simulate", "simulate one pattern from TOML configs")
    add_config_args(p)
    p.add_argument("--out", required=True, metavar="FILE", help="output NeXus/HDF5 file")
    p.add_argument("--figure", metavar="FILE",
                   help="also write a figure (log scale, q rings, SAXS inset, labelled reflections)")
    p.add_argument("--png", dest="figure", help=argparse.SUPPRESS)     # the earlier name of --figure
    p.add_argument("--counts", type=float, default=None, help="total expected counts (then Poisson noise)")
    p.add_argument("--seed", type=int, default=None, help="seed of the Poisson noise (implies noise)")
    add_json_arg(p, "a summary (files, shape, counts, reflections)")
    p.set_defaults(func=run)
