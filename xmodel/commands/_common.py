"""Shared argument helpers for the ``xmodel`` subcommands."""
from __future__ import annotations

import argparse


def add_config_args(p: argparse.ArgumentParser, binning: bool = True) -> None:
    """CONFIG... positional files plus ``--set`` overrides (and ``--binning``)."""
    p.add_argument("configs", nargs="+", metavar="CONFIG",
                   help="TOML files merged in order (experiment, then sample)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override one value, parsed as TOML (e.g. superlattice.beam_direction=[1,1,2])")
    if binning:
        p.add_argument("--binning", type=int, default=None, help="bin the detector by this factor")


def load(args):
    """The merged, validated `Config` of the parsed CONFIG... and --set arguments."""
    from xmodel.config import load_config
    return load_config(args.configs, args.overrides)


def parse_pair(text: str, name: str, what: str = "X,Y in um (x the fast scan axis)",
               example: str = "7.0,2.5") -> tuple[float, float]:
    """Two comma-separated numbers of an option (a point ``X,Y`` in um, or a window ``LO,HI``)."""
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a pair of numbers; write it as {what}, "
                         f"e.g. {name} {example}") from None
    return a, b
