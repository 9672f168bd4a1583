"""Recovered-vs-true tables of a scan fit on a twin (Gaussian or realistic): accuracy and model bias.

Usage: python benchmarks/validation.py FITS.h5 TRUTH.h5 [--misfit-deg 5] [--any-status]
           [--reference auto|domain|grains]

Prints `fits.scan.truth.compare_to_truth` (the accuracy table of `xmodel demo`) and
`fits.scan.truth.bias_table` (mean +- standard deviation of the signed errors of the lattice
constant, the tilts, the in-plane angle and the disorder, per domain's bulk and for boundary
points, over in-domain ok frames with visible SL peaks within ``--misfit-deg`` of the truth).
The angles of the bias table are measured from the mean orientation of the grains in the beam
where the truth holds it (the realistic twin; ``--reference domain`` for the domain's), and the
lattice constant from the grains' (in the plane normal to the beam) where it holds that too.
The tables of docs/validation.md were made with it.
"""
from __future__ import annotations

import argparse

from fits.scan.truth import (
    ORIENTATION_REFERENCES,
    bias_table,
    compare_to_truth,
    format_bias_table,
    format_truth_table,
    grain_lattice_reference,
    read_truth,
    resolve_reference,
)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fits", help="results file with /entry/fits")
    ap.add_argument("truth", help="the twin's truth.h5")
    ap.add_argument("--misfit-deg", type=float, default=5.0,
                    help="fits further than this from the true orientation count as misfits (deg)")
    ap.add_argument("--any-status", action="store_true",
                    help="the bias table counts every fitted frame, not only those with status ok")
    ap.add_argument("--reference", choices=ORIENTATION_REFERENCES, default="auto",
                    help="the bias table's true orientation: the domain's or the grains' mean in the beam "
                         "(auto: the grains' where the truth has them)")
    args = ap.parse_args(argv)
    print(format_truth_table(compare_to_truth(args.fits, args.truth)))
    print()
    which = "fitted frames of any status" if args.any_status else "frames with status ok"
    truth = read_truth(args.truth)
    grains = resolve_reference(truth, args.reference, args.truth) == "grains"
    ref = "the grains' mean orientation" if grains else "the domain's orientation"
    if grains and grain_lattice_reference(truth) is not None:
        ref += ", lattice constant from the grains' in the plane normal to the beam"
    print(f"Signed errors, mean +- std ({which}, within {args.misfit_deg:g} deg of the truth; angles from {ref}):")
    print()
    print(format_bias_table(bias_table(args.fits, args.truth, misfit_deg=args.misfit_deg, ok_only=not args.any_status,
                                       reference=args.reference)))


if __name__ == "__main__":
    main()
