"""``xmodel synth``: a synthetic scan (the digital twin) in the Dectris Eiger layout."""
from __future__ import annotations

from xmodel.commands._common import add_command, wrote


def run(args) -> int:
    from fits.analyses.arguments import finite_number, positive_int
    from xmodel.outputs import prepare_folder

    positive_int(args.batch_size, "batch_size", "--batch-size", maximum=4096, example="8")
    finite_number(args.monitor_variation, "monitor_variation", "--monitor-variation", ge=0, le=1,
                  unit="relative flux spread", example="0.2")
    finite_number(args.dummy_frames, "dummy_fraction", "--dummy-frames", ge=0, le=1, unit="of the frames",
                  example="0.05")
    finite_number(args.position_jitter_um, "position_jitter_um", "--position-jitter-um", ge=0, unit="um",
                  example="0.005")
    prepare_folder(args.out, "--out")
    if args.engine == "realspace":
        from xmodel.commands._common import UsageError
        from xmodel.realspace import synthesize_realspace

        if len(args.configs) != 1:
            raise UsageError(f"--engine realspace takes one realistic-twin TOML, got {len(args.configs)}: "
                                 f"pass e.g. configs/twin_realistic_demo.toml.")
        master = synthesize_realspace(args.configs[0], args.out, overrides=args.overrides,
                                      progress=args.quiet_level == 0, restart=args.restart)
        wrote(args, master)
        return 0
    from xmodel.config import shipped_config
    from xmodel.synth import synthesize

    configs = [shipped_config(c) for c in args.configs]  # "twin" or "demo" name the shipped twins
    master = synthesize(configs, args.out, overrides=args.overrides, progress=args.quiet_level == 0,
                        batch_size=args.batch_size, scan_order=args.scan_order,
                        monitor_variation=args.monitor_variation, dummy_fraction=args.dummy_frames,
                        position_jitter_um=args.position_jitter_um, restart=args.restart)
    wrote(args, master)
    return 0


def add_parser(sub) -> None:
    p = add_command(sub, "synth", "synthesise a scan of the digital-twin sample (Eiger HDF5 + truth.h5)")
    p.add_argument("configs", nargs="+", metavar="CONFIG",
                   help="the twin TOML (e.g. configs/twin.toml, or by name: twin, demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override one value, parsed as TOML (e.g. scan.shape=[21,21], seed=3)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--batch-size", type=int, default=8, help="scan points dispatched together (default 8)")
    p.add_argument("--scan-order", choices=("raster", "snake"), default="raster",
                   help="order the frames are acquired in (snake: every other row reversed); default raster")
    p.add_argument("--monitor-variation", type=float, default=0.0, metavar="F",
                   help="incident flux per frame drawn in 1 +- F (0.2: +-20 %%), in the counts and the .fio monitor")
    p.add_argument("--dummy-frames", type=float, default=0.0, metavar="F",
                   help="fraction of frames given 3 dummy pixels (2**32-1) outside the pixel mask")
    p.add_argument("--position-jitter-um", type=float, default=0.0, metavar="S",
                   help="Gaussian encoder noise (um) on the positions written to the .fio")
    p.add_argument("--engine", choices=("model", "realspace"), default="model",
                   help="model: the Gaussian-peak forward model (default); realspace: the independent real-space "
                        "simulator, CONFIG a realistic twin such as configs/twin_realistic_demo.toml "
                        "(docs/realspace.md)")
    p.add_argument("--restart", action="store_true",
                   help="discard an unfinished synthesis in OUT and start over (without it, one with the same "
                        "settings is resumed from its last complete data file and one with other settings is "
                        "refused)")
    p.set_defaults(func=run)
