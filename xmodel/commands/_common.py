"""Shared argument helpers for the ``xmodel`` subcommands.

The conventions every command follows (tests/xmodel/test_cli_conventions.py checks them):
configs are positional ``CONFIG...`` TOML files with repeatable ``--set TABLE.KEY=VALUE``;
``--figure FILE`` for one figure, ``--figures DIR`` for several; ``--json`` where results
are printed; ``-v``/``-q`` (``-q``: only warnings and errors, no "wrote" lines of commands that
write files); defaults shown in ``--help``; ``choices`` where values are fixed. Output paths are
checked before any computation (`xmodel.outputs`).
"""
from __future__ import annotations

import argparse


class UsageError(Exception):
    """Options that do not go together (exit code 2, like argparse's own usage errors)."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, but not for flags or options without one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == []:
            return action.help or ""
        return super()._get_help_string(action)


def add_command(sub, name: str, help: str, description: str | None = None,
                epilog: str | None = None) -> argparse.ArgumentParser:
    """A subcommand parser with the shared help formatter and ``-v``/``-q``."""
    from xmodel.progress import add_verbosity_args

    p = sub.add_parser(name, help=help, description=description or help[:1].upper() + help[1:] + ".",
                       epilog=epilog, formatter_class=HelpFormatter)
    add_verbosity_args(p, sub=True)
    return p


def add_config_args(p: argparse.ArgumentParser, binning: bool = True, *, required: bool = True) -> None:
    """CONFIG... positional files plus ``--set`` overrides (and ``--binning``)."""
    p.add_argument("configs", nargs="+" if required else "*", metavar="CONFIG",
                   help="TOML files merged in order (experiment, then sample)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override one value, parsed as TOML (e.g. superlattice.beam_direction=[1,1,2]); "
                        "repeatable")
    if binning:
        p.add_argument("--binning", type=int, default=None,
                       help="bin the detector by this factor (default: the config's detector.binning)")


def add_scan_config_args(p: argparse.ArgumentParser) -> None:
    """CONFIG... positional TOML files after the scan file, ``--set``, and the older repeated
    ``--config TOML`` (hidden, still accepted; `scan_configs` merges both)."""
    p.add_argument("configs", nargs="*", metavar="CONFIG",
                   help="experiment and sample TOML files (and [fit] tables), merged in order")
    p.add_argument("--config", dest="config_options", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override one config value, also of the [fit] table (e.g. fit.neighbour_passes=0); "
                        "repeatable")


def scan_configs(args) -> list[str]:
    """The config files of `add_scan_config_args`, positional ones first; at least one."""
    configs = list(args.configs) + list(args.config_options)
    if not configs:
        raise UsageError("give the experiment and sample configs after the scan file, e.g. "
                         "configs/experiment/p10_eiger4m.toml configs/domains/red.toml")
    return configs


def wrote(args, path) -> None:
    """Say ``wrote PATH`` on standard output, except under ``-q`` (a command whose output is
    files prints nothing then but warnings and errors)."""
    if getattr(args, "quiet_level", 0) <= 0:
        print(f"wrote {path}")


def add_json_arg(p: argparse.ArgumentParser, what: str = "the results") -> None:
    """``--json``: print the results as JSON on standard output instead of text."""
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON instead of text")


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
