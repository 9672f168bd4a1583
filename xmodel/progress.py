"""Progress bars and log messages of long loops, for terminals and for log files alike.

`progress` wraps `tqdm`: on a terminal it draws the usual bar; when standard error is not a
terminal (a batch job, a log file, a CI run) it writes a plain log line through `logging` at
most every ``interval`` seconds, with no carriage returns. `configure_logging` sets the level
of the ``xmodel`` and ``fits`` loggers from the command line's ``-v``/``-q`` count.

Library code logs through ``logging.getLogger(__name__)`` and never configures handlers;
only the command line (`xmodel.cli`) or the user calls `configure_logging`.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

LOGGERS = ("xmodel", "fits")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_TTY_FORMAT = "%(message)s"
_HANDLER_NAME = "xmodel-cli"

_log = logging.getLogger(__name__)
_state = {"enabled": True}


def level_for(verbosity: int) -> int:
    """Logging level of a verbosity count: -1 (``-q``) warnings, 0 info, >= 1 (``-v``) debug."""
    if verbosity < 0:
        return logging.WARNING if verbosity == -1 else logging.ERROR
    return logging.INFO if verbosity == 0 else logging.DEBUG


def configure_logging(verbosity: int = 0, stream=None) -> None:
    """Send the ``xmodel`` and ``fits`` log records to ``stream`` (default stderr) at a level.

    Parameters
    ----------
    verbosity : int
        ``-v`` count minus ``-q`` count: 0 shows progress and info messages, 1 adds debug
        messages, -1 shows only warnings and errors and switches progress bars off.
    stream : file-like, optional
        Where the messages go (default ``sys.stderr``). On a terminal the messages are bare;
        otherwise each line carries time, level and logger name.

    Calling it again replaces the handler it installed before (no duplicated lines).
    """
    stream = sys.stderr if stream is None else stream
    tty = _isatty(stream)
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(_TTY_FORMAT if tty else _FORMAT, "%H:%M:%S"))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for h in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
            logger.removeHandler(h)
        logger.addHandler(handler)
        logger.setLevel(level_for(verbosity))
    _state["enabled"] = verbosity >= 0


def logging_state() -> tuple:
    """What `configure_logging` changes (handlers, levels, progress on/off), for `restore_logging`."""
    return (tuple((name, list(logging.getLogger(name).handlers), logging.getLogger(name).level)
                  for name in LOGGERS), _state["enabled"])


def restore_logging(state: tuple) -> None:
    """Put back a `logging_state`: the end of a command run in-process (`xmodel.cli.main` from
    Python or from another command), so that its settings and its stream do not outlive it."""
    loggers, enabled = state
    for name, handlers, level in loggers:
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
    _state["enabled"] = enabled


def add_verbosity_args(parser: argparse.ArgumentParser, *, sub: bool = False) -> None:
    """``-v/--verbose`` and ``-q/--quiet`` (counted) on the main parser or on a subcommand.

    On a subcommand (``sub=True``) the defaults are suppressed so that ``xmodel -v simulate``
    and ``xmodel simulate -v`` mean the same.
    """
    default = argparse.SUPPRESS if sub else 0
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="more messages (debug level; repeatable)")
    parser.add_argument("-q", "--quiet", dest="quiet_level", action="count", default=default,
                        help="only warnings and errors, no progress bars")


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _LogLines:
    """A tqdm-like counter that logs ``desc: n/total (pct) elapsed, eta`` every ``interval`` s."""

    def __init__(self, total: int | None, desc: str, unit: str, interval: float, logger: logging.Logger,
                 initial: int = 0):
        self.total, self.desc, self.unit, self.interval, self.logger = total, desc, unit, interval, logger
        self.n = self.initial = initial
        self.start = self.last = time.monotonic()
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval or (self.total is not None and self.n >= self.total):
            self.last = now
            self._emit(now)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:  # noqa: ARG002 - tqdm's API
        self.postfix = text

    def _emit(self, now: float) -> None:
        elapsed = now - self.start
        if self.total:
            new = self.n - self.initial       # the rate of this run, not of the steps it resumed after
            eta = elapsed / new * (self.total - self.n) if new else float("nan")
            msg = (f"{self.desc}: {self.n}/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f} %), "
                   f"{elapsed:.0f} s elapsed, {eta:.0f} s left")
        else:
            msg = f"{self.desc}: {self.n} {self.unit}, {elapsed:.0f} s elapsed"
        self.logger.info(msg + (f" [{self.postfix}]" if self.postfix else ""))

    def close(self) -> None:
        if self.n > self.initial and time.monotonic() - self.last > 0:
            if self.total is None or self.n < self.total:
                self._emit(time.monotonic())

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Silent:
    """Counter with tqdm's methods that shows nothing."""

    def __init__(self, initial: int = 0):
        self.n = initial

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:  # noqa: ARG002
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress_bar(total: int | None = None, *, desc: str = "", unit: str = "it", enabled: bool = True,
                 interval: float = 10.0, stream=None, logger: logging.Logger | None = None, initial: int = 0):
    """A progress counter with tqdm's ``update``/``set_postfix_str``/``close`` (and ``with``).

    Parameters
    ----------
    total : int, optional
        Number of steps, if known.
    desc, unit : str
        Label and unit of the count ("frames", "points").
    enabled : bool
        False: show nothing (``progress=False`` of the library functions). Also off after
        ``configure_logging(-1)`` (``xmodel -q``).
    interval : float
        Seconds between two log lines when ``stream`` is not a terminal.
    stream : file-like, optional
        Where a bar is drawn (default stderr). A terminal or a Jupyter kernel gets a tqdm bar
        (a widget in notebooks), anything else log lines through ``logger`` (default the
        ``xmodel.progress`` logger).
    initial : int
        Steps done before this run (a resumed one): the count starts there and the rate and the
        time left are those of this run's steps.
    """
    if not enabled or not _state["enabled"]:
        return _Silent(initial)
    notebook = stream is None and "ipykernel" in sys.modules
    stream = sys.stderr if stream is None else stream
    if notebook or _isatty(stream):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=f" {unit}", file=stream, dynamic_ncols=True, leave=True,
                    initial=initial)
    return _LogLines(total, desc, unit, interval, logger or _log, initial)


def progress(iterable: Iterable[T], total: int | None = None, **kwargs) -> Iterator[T]:
    """Iterate over ``iterable`` while showing progress (see `progress_bar` for the options)."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with progress_bar(total, **kwargs) as bar:
        for item in iterable:
            yield item
            bar.update(1)
