"""``xmodel simulate``: one pattern from TOML configs, as HDF5 (+ PNG)."""
from __future__ import annotations

import logging

from xmodel.commands._common import add_config_args, load

log = logging.getLogger(__name__)


def run(args) -> int:
    import numpy as np

    from xmodel.experiment import beam_center_px
    from xmodel.figures import miller_label, plot_pattern, save_figure
    from xmodel.simulate import Simulation, simulate_counts, write_pattern

    cfg = load(args)
    sim = Simulation.from_config(cfg, binning=args.binning)
    image = sim.expected()
    noisy = args.counts is not None or args.seed is not None
    if noisy:
        image = simulate_counts(image, ~sim.experiment.mask, args.counts, args.seed)
    refl = sim.reflections()
    write_pattern(args.out, image, sim, noisy=noisy, seed=args.seed, counts=args.counts, reflections=refl)
    log.info(f"wrote {args.out} ({image.shape[0]} x {image.shape[1]}, max {float(np.max(image)):.4g} counts)")
    if args.png:
        fig = plot_pattern(image, sim.experiment.mask, beam_center_px(sim.experiment.geometry),
                           q=sim.experiment.geometry.q(), reflections=sim.reflections(include_all=True),
                           title=f"{cfg.name}: beam along " + miller_label(cfg.superlattice.beam_direction, "SL")
                           + f", {cfg.atomic_lattice.configuration}")
        save_figure(fig, args.png, dpi=110)
        log.info(f"wrote {args.png}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("simulate", help="simulate one pattern from TOML configs")
    add_config_args(p)
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--png", help="also write a figure (log scale, SAXS inset, labelled reflections)")
    p.add_argument("--counts", type=float, default=None, help="total expected counts (then Poisson noise)")
    p.add_argument("--seed", type=int, default=None, help="seed of the Poisson noise (implies noise)")
    p.set_defaults(func=run)
