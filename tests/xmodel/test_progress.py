"""Progress display and logging set-up of `xmodel.progress`."""
from __future__ import annotations

import io
import logging

import pytest

from xmodel import progress as prog


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    for name in prog.LOGGERS:
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.setLevel(logging.NOTSET)
    prog._state["enabled"] = True


def test_log_file_gets_plain_lines_without_carriage_returns():
    log = io.StringIO()
    prog.configure_logging(0, stream=log)
    for _ in prog.progress(range(5), desc="reduce", unit="frames", interval=0.0, stream=io.StringIO()):
        pass
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 5 and lines[-1].endswith("reduce: 5/5 frames (100 %), 0 s elapsed, 0 s left")
    assert " INFO xmodel.progress: " in lines[0]           # time, level and logger on a log file


def test_terminal_gets_a_tqdm_bar():
    term = _Terminal()
    bar = prog.progress_bar(3, desc="fit", unit="frames", stream=term)
    bar.update(3)
    bar.close()
    from tqdm import tqdm

    assert isinstance(bar, tqdm) and "3/3" in term.getvalue() and "\r" in term.getvalue()


def test_quiet_switches_progress_and_info_off():
    log = io.StringIO()
    before = prog.logging_state()
    try:
        prog.configure_logging(-1, stream=log)
        bar = prog.progress_bar(2, desc="synth", interval=0.0, stream=io.StringIO())
        bar.update(2)
        logging.getLogger("fits.scan.driver").info("hidden")
        logging.getLogger("xmodel.io").warning("shown")
        assert log.getvalue().splitlines()[-1].endswith("WARNING xmodel.io: shown")
        assert "hidden" not in log.getvalue() and "synth" not in log.getvalue()
    finally:
        prog.restore_logging(before)                   # no quiet state or closed stream left behind
    assert prog._state["enabled"]


def test_verbosity_levels_and_no_duplicate_handlers():
    assert [prog.level_for(v) for v in (-2, -1, 0, 1, 2)] == [
        logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG, logging.DEBUG]
    log = io.StringIO()
    prog.configure_logging(1, stream=log)
    prog.configure_logging(1, stream=log)
    logging.getLogger("xmodel.simulate").debug("once")
    assert log.getvalue().count("once") == 1


def test_resumed_count_starts_at_initial_and_times_only_its_own_steps(monkeypatch):
    """A resumed run (8 of 10 steps done before) shows 8/10 at once, and its time left comes from
    the rate of its own steps: 2 s for 1 step, 1 step left -> 2 s (not 2 / 9 s per step)."""
    log = io.StringIO()
    prog.configure_logging(0, stream=log)
    clock = iter([0.0, 2.0, 2.0])
    monkeypatch.setattr(prog.time, "monotonic", lambda: next(clock))
    bar = prog.progress_bar(10, desc="synth", unit="frames", interval=1.0, stream=io.StringIO(), initial=8)
    assert bar.n == 8
    bar.update(1)
    assert log.getvalue().rstrip().endswith("synth: 9/10 frames (90 %), 2 s elapsed, 2 s left")
    silent = prog.progress_bar(10, enabled=False, initial=8)
    assert silent.n == 8
    terminal = prog.progress_bar(10, stream=_Terminal(), initial=8)
    assert terminal.n == 8
    terminal.close()
