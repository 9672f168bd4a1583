"""Pull statistics of a scan fit on the digital twin: are the stored standard errors calibrated?

Usage: python benchmarks/pulls.py FITS.h5 TRUTH.h5 [--misfit-deg DEG]

Prints the command and the table of `fits.scan.truth.pull_table`: per stored parameter the
pulls ``(fitted - true) / stderr`` over the in-domain ok frames, their mean, standard deviation
and robust standard deviation (1.4826 MAD); calibrated uncertainties give std ~1. With the
frames' dispersion (``/entry/fits/dispersion``) its median and range follow. The figures of
docs/performance.md ("Calibrated uncertainties") were made with

    xmodel synth configs/demo.toml --set scan.shape=[7,7] --set scan.step_um=2 --out DIR
    xmodel reduce DIR/demo_master.h5 --out results.h5
    xmodel fit results.h5 --config configs/experiment/p10_eiger4m.toml \
        --config configs/domains/red.toml --out fits.h5
    python benchmarks/pulls.py fits.h5 DIR/truth.h5
"""
from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np

from fits.scan.results import read_fits
from fits.scan.truth import format_pull_table, pull_table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fits", help="results file with /entry/fits")
    ap.add_argument("truth", help="the twin's truth.h5")
    ap.add_argument("--misfit-deg", type=float, default=None,
                    help="also the table without frames further than this from the true orientation (deg)")
    args = ap.parse_args(argv)
    print("command: python benchmarks/pulls.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
    print(format_pull_table(pull_table(args.fits, args.truth)))
    if args.misfit_deg is not None:
        t = pull_table(args.fits, args.truth, misfit_deg=args.misfit_deg)
        print(f"\nWithout the {t['lattice_constant']['misfits']} frames more than {args.misfit_deg:g} deg off "
              "(a wrong orientation):")
        print(format_pull_table(t))
    fit = read_fits(args.fits)
    if "dispersion" in fit:
        phi = np.asarray(fit["dispersion"], float)
        phi = phi[np.isfinite(phi)]
        if phi.size:
            print(f"dispersion (Pearson X^2 / degrees of freedom) over {phi.size} fitted frames: median "
                  f"{np.median(phi):.3f}, range {phi.min():.3f} - {phi.max():.3f}")


if __name__ == "__main__":
    main()
