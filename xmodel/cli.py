"""The ``xmodel`` command line; each subcommand lives in `xmodel.commands`.

Start-up is kept light: building the parser imports no JAX (the command modules import their
heavy modules inside their ``run`` functions), so ``xmodel --help`` and usage errors are fast.

Exit codes
----------
0 success; 1 internal error (a bug: the traceback and a request to report it are printed) or a
missing optional package (the message names what to install); 2 usage error (argparse);
3 bad input data or configuration (a missing file, an invalid TOML key, an unreadable frame);
130 interrupted; 141 output pipe closed (``xmodel facets --json | head``).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
import traceback
from pathlib import Path

import xmodel.commands as commands
from xmodel.commands._common import UsageError
from xmodel import __version__

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_INPUT = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_PIPE = 130, 141

#: size limit of the compilation cache (bytes)
CACHE_MAX_BYTES = 2 * 1024 ** 3

#: exception classes that mean bad input data or configuration (exit code 3). They are raised
#: with a message naming the file, key or frame at fault (`xmodel.config`, `xmodel.io`, ...).
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, FileNotFoundError, OSError)

#: optional packages -> how to install them (the message of a missing optional dependency)
OPTIONAL_PACKAGES = {
    "fabio": "pip install fabio  (reads EDF/TIFF/CBF masks)",
    "pyFAI": "pip install pyFAI  (pyFAI detectors and cross-checks)",
    "dask": "pip install 'xmodel[distributed]'",
    "distributed": "pip install 'xmodel[distributed]'",
    "silx": "pip install silx",
    "sasmodels": "pip install 'xmodel[test]'",
    "periodictable": "pip install 'xmodel[test]'",
}

EPILOG = """\
exit codes: 0 ok, 1 internal error (please report it) or missing optional package,
2 usage error, 3 bad input data or configuration.

JAX compilations are cached between calls in {cache} (set XMODEL_CACHE_DIR to move it,
XMODEL_NO_CACHE=1 to switch it off); the first call of a command compiles, later calls with
the same detector and config reuse the compiled code.
"""


def cache_dir() -> Path:
    """Per-user cache folder of xmodel: ``$XMODEL_CACHE_DIR``, else the platform's user cache.

    ``$XDG_CACHE_HOME/xmodel`` (default ``~/.cache/xmodel``) on Linux, ``~/Library/Caches/xmodel``
    on macOS, ``%LOCALAPPDATA%\\xmodel\\Cache`` on Windows (the folders of `platformdirs`).
    """
    if os.environ.get("XMODEL_CACHE_DIR"):
        return Path(os.environ["XMODEL_CACHE_DIR"]).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "xmodel"
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "xmodel" / "Cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xmodel"


def enable_compilation_cache() -> Path | None:
    """Point JAX's persistent compilation cache at ``cache_dir()/jax`` (before JAX is imported).

    Uses JAX's environment variables, so nothing is imported here; a cache folder the user
    already chose (``JAX_COMPILATION_CACHE_DIR``) is kept, and ``XMODEL_NO_CACHE=1`` turns the
    cache off. Every compilation is cached (no minimum compile time): a CLI call compiles about
    a hundred small programs, which together dominate its run time. JAX evicts the least
    recently used entries beyond `CACHE_MAX_BYTES` (one call of a command adds about 1 MB).
    Returns the folder, or None when switched off or JAX was already imported (a Python
    process that configured JAX itself).
    """
    if os.environ.get("XMODEL_NO_CACHE") or "jax" in sys.modules:
        return None
    folder = Path(os.environ.get("JAX_COMPILATION_CACHE_DIR") or cache_dir() / "jax")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:             # read-only home: run uncached rather than fail
        return None
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(folder)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(CACHE_MAX_BYTES))
    return folder


def build_parser() -> argparse.ArgumentParser:
    """The ``xmodel`` parser with one subparser per module of `xmodel.commands`."""
    from xmodel.progress import add_verbosity_args

    parser = argparse.ArgumentParser(
        prog="xmodel", description="Differentiable modelling and fitting of scanning X-ray "
        "nanodiffraction of nanocrystal superlattices.",
        epilog=EPILOG.format(cache=cache_dir() / "jax"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"xmodel {__version__}")
    add_verbosity_args(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{commands.__name__}.{info.name}").add_parser(sub)
    return parser


def _missing_package(exc: ImportError) -> str | None:
    """Install hint for an optional package that is not installed, else None."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    return OPTIONAL_PACKAGES.get(name) if isinstance(exc, ModuleNotFoundError) else None


def _close_stdout() -> None:
    """After a closed pipe: send what Python still flushes at exit to /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command and map what it raises to an exit code (see the module docstring)."""
    from xmodel.progress import configure_logging, logging_state, restore_logging

    log = logging.getLogger("xmodel")
    before = logging_state()
    configure_logging(getattr(args, "verbose", 0) - getattr(args, "quiet_level", 0))
    name = f"xmodel {args.command}"
    try:
        return _run(args, name, log)
    finally:
        restore_logging(before)


def _run(args: argparse.Namespace, name: str, log: logging.Logger) -> int:
    """The command itself, its exceptions mapped to exit codes."""
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _close_stdout()
        return EXIT_PIPE
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ImportError as exc:
        hint = _missing_package(exc)
        if hint is None:
            return _internal(name, exc)
        print(f"{name}: error: this needs the optional package '{exc.name}', which is not installed; "
              f"install it with: {hint}", file=sys.stderr)
        return EXIT_INTERNAL
    except UsageError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except INPUT_ERRORS as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        log.debug("traceback of the input error", exc_info=True)
        print(f"{name}: error: {msg}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as exc:  # noqa: BLE001 - the last resort of a command line
        return _internal(name, exc)


def _internal(name: str, exc: BaseException) -> int:
    traceback.print_exception(exc, file=sys.stderr)
    print(f"{name}: internal error ({type(exc).__name__}: {exc}). This is a bug in xmodel {__version__}; "
          "please report it with the command line and the traceback above.", file=sys.stderr)
    return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xmodel`` script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    enable_compilation_cache()
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
