"""``xmodel study``: Cramer-Rao bounds, sensitivity maps, design scans, Monte Carlo checks."""
from __future__ import annotations

import json

from xmodel.commands._common import UsageError, add_command, add_config_args

VARY_HELP = ("vary a setting: KEY=LO:HI:N (N values from LO to HI) or KEY={V1;V2;...} (TOML values); "
             "KEY is exposure_s, a numeric config key (detector.distance_m, beam.energy_kev, "
             "superlattice.tilt1_deg, atomic_lattice.disorder_fwhm_deg, ...), an element of a vector "
             "(detector.beam_center_px[1]) or, in the list form, any key (superlattice.beam_direction="
             "{[0,0,1];[1,1,0]}); give it once or twice")


def _names(text: str | None):
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--params {text!r} names no parameter; write e.g. --params lattice_constant,tilt1_deg")
    return names


def run(args) -> int:
    from fits.analyses.arguments import finite_number
    from fits.study.design import design_scan
    from fits.study.montecarlo import monte_carlo
    from fits.study.problem import StudyProblem
    from fits.study.result import result_of
    from fits.study.sensitivity import plot_sensitivity, sensitivity_maps
    from xmodel.config import load_config
    from xmodel.outputs import prepare_file, prepare_folder

    finite_number(args.monte_carlo, "n_replicates", "--monte-carlo", ge=0, example="50")
    finite_number(args.seed, "seed", "--seed", ge=0, example="0")
    names = _names(args.params)
    if args.exposure_s is not None and not args.exposure_s > 0:
        raise ValueError(f"--exposure-s {args.exposure_s!r} must be a positive number of seconds, e.g. 0.3")
    if args.mc_start != "truth" and not args.monte_carlo:
        raise UsageError(f"--mc-start {args.mc_start} needs --monte-carlo N (the number of replicates to refit)")
    if args.figures:
        prepare_folder(args.figures, "--figures")
    if args.out and not args.vary:
        prepare_file(args.out, "--out", hdf5=True, example="study.h5")
    if args.vary:
        if args.monte_carlo:
            raise UsageError("--monte-carlo checks one pattern; run it without --vary (a design scan would "
                             "refit every point)")
        if args.out:
            raise UsageError("--out writes the study of one pattern; for a design scan (--vary) save the "
                             "--json output instead")
        res = design_scan(args.configs, args.overrides, args.vary, names, grid=args.grid,
                          exposure_s=args.exposure_s)
        if args.json:
            print(json.dumps(res.to_dict(), indent=1))
        else:
            print(res.table())
        if args.figures:
            path = res.plot(f"{args.figures}/design.png")
            if not args.json:
                print(f"wrote {path}")
        return 0
    cfg = load_config(args.configs, args.overrides)
    problem = StudyProblem.from_config(cfg, names, args.grid, args.exposure_s)
    starts = tuple(dict.fromkeys(s.strip() for s in args.mc_start.split(",")))
    mc = monte_carlo(problem, args.monte_carlo, args.seed, starts, args.cache_dir) if args.monte_carlo else {}
    result = result_of(problem, mc=mc)
    if args.json:
        print(result.to_json())
    else:
        print(result.table())
    if args.figures:
        paths = plot_sensitivity(problem, sensitivity_maps(problem), args.figures)
        if not args.json:
            print(f"wrote {len(paths)} sensitivity maps to {args.figures}")
    if args.out:
        result.write(args.out)
        if not args.json:
            print(f"wrote {args.out}")
    return 0


def add_parser(sub) -> None:
    p = add_command(sub, "study", "Cramer-Rao bounds, sensitivity maps and design scans of a pattern",
                    description="Fisher information of the Poisson likelihood of one simulated pattern: "
                    "marginal and conditional Cramer-Rao bounds, correlations, parameters that cannot be "
                    "told apart; sensitivity maps; bounds against experiment settings; Monte Carlo refits.")
    add_config_args(p, binning=False)
    p.add_argument("--params", default=None, metavar="NAME,NAME,...",
                   help="fit parameters to study (fits.parameters names; default: those a scan fit refines)")
    p.add_argument("--exposure-s", type=float, default=None, metavar="S",
                   help="exposure of the frame (s); the config's scales are counts at beam.exposure_s and scale "
                        "linearly (default: beam.exposure_s)")
    p.add_argument("--grid", choices=("full", "binned", "polar"), default="polar",
                   help="points: every detector pixel, binned pixels, or the polar bins a scan fit uses")
    p.add_argument("--vary", action="append", default=[], metavar="KEY=LO:HI:N", help=VARY_HELP)
    p.add_argument("--monte-carlo", type=int, default=0, metavar="N",
                   help="refit N Poisson replicates and report their standard deviation and bias")
    p.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo replicates")
    p.add_argument("--mc-start", default="truth", metavar="truth,search",
                   help="Monte Carlo fits start at the truth, run the scan fit's search (polar grid), or both")
    p.add_argument("--cache-dir", default=None, help="template bank cache of the search start")
    p.add_argument("--figures", default=None, metavar="DIR", help="write sensitivity maps (or the design plot) here")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", default=None, metavar="study.h5", help="write the result to this HDF5 file")
    p.set_defaults(func=run)
