"""Fault injection, command line: every error class of xmodel reaches the user as its exit code
with a one-line message (no traceback), and ``-q`` leaves only warnings and errors.

tests/xmodel/test_cli_conventions.py checks the mapping of the built-in classes (ValueError,
KeyError, OSError, a bug, a missing optional package, a closed pipe); here every error class the
project defines is found in its sources and raised through `xmodel.cli.run_command`.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import re
from pathlib import Path

import numpy as np
import pytest

from xmodel import cli
from xmodel.commands._common import UsageError

REPO = Path(__file__).resolve().parents[2]


def _error_classes() -> list[tuple[str, str]]:
    """(module, class) of every exception class defined in xmodel/ and fits/ (read from the
    sources, so that a new one is not missed)."""
    out = []
    for package in ("xmodel", "fits"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ClassDef) and any(
                        getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception")) for b in node.bases):
                    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
                    out.append((module, node.name))
    return out


def _run(func, command: str = "fit") -> int:
    return cli.run_command(argparse.Namespace(command=command, func=func, verbose=0, quiet_level=0))


@pytest.mark.parametrize("module, name", _error_classes(), ids=[n for _, n in _error_classes()])
def test_every_error_class_of_xmodel_has_its_exit_code(module, name, capsys):
    """Bad options are usage errors (2); every other error class of the project means bad input,
    configuration or output (3) and never reads as a bug in xmodel (1)."""
    cls = getattr(importlib.import_module(module), name)
    expected = cli.EXIT_USAGE if issubclass(cls, UsageError) else cli.EXIT_INPUT
    assert issubclass(cls, (UsageError, *cli.INPUT_ERRORS)), f"{name} would be reported as an internal error"

    def fail(args):
        raise cls(f"{name}: the message names the file and the key")

    assert _run(fail) == expected
    err = capsys.readouterr().err
    assert err == f"xmodel fit: error: {name}: the message names the file and the key\n"


def test_the_project_defines_its_error_classes():
    names = {n for _, n in _error_classes()}
    assert {"ConfigError", "OutputError", "ReductionError", "ScanError", "UsageError"} <= names


def test_interrupt_exits_130(capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    assert _run(interrupted) == cli.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "xmodel fit: interrupted\n"


def test_write_failure_mid_run_exits_3_with_its_whole_message(capsys):
    import errno

    from xmodel.outputs import write_failure

    def disk_full(args):
        raise write_failure("fits.h5", OSError(errno.ENOSPC, "No space left on device"), "frames 32 to 47",
                            "The checkpoint stays at frame 32", "finish the scan")
    assert _run(disk_full) == 3
    assert capsys.readouterr().err == ("xmodel fit: error: Writing frames 32 to 47 to fits.h5 failed: the disk is "
                                       "full (ENOSPC). The checkpoint stays at frame 32; free some space and run the "
                                       "same command again to finish the scan.\n")


# --- -q: nothing but warnings and errors -----------------------------------------------------

TWIN = """
name = "quiet"
seed = 3
experiment = "{configs}/experiment/p10_eiger4m.toml"
[detector]
binning = 16
[scan]
shape = [1, 2]
step_um = 2.0
[[domain]]
file = "{configs}/domains/red.toml"
center_um = [1.0, 1.0]
radius_um = 3.0
width_um = 2.0
"""


def _master(folder: Path) -> Path:
    from xmodel.dectris import write_scan
    from xmodel.geometry import Geometry

    geo = Geometry(dist=0.05, poni1=30.3 * 75e-6, poni2=20.7 * 75e-6, rot1=0.0, rot2=0.0, rot3=0.0,
                   wavelength=0.898e-10, pixel1=75e-6, pixel2=75e-6, shape=(60, 50), detector_name="")
    frames = np.random.default_rng(1).poisson(4.0, (3, 60, 50)).astype(np.uint32)
    return write_scan(folder / "raw", "s", iter(frames), 3, geo, positions_um=None, pixel_mask=None)


def _quiet_run(argv: list[str], capsys) -> tuple[str, list[str]]:
    assert cli.main([*argv, "-q"]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err.splitlines()


def _only_warnings(lines: list[str]) -> bool:
    return all(re.search(r"\b(WARNING|ERROR)\b", ln) for ln in lines)


def test_quiet_synth_prints_nothing(tmp_path, capsys):
    twin = tmp_path / "quiet.toml"
    twin.write_text(TWIN.format(configs=REPO / "configs"))
    out, err = _quiet_run(["synth", str(twin), "--out", str(tmp_path / "scan")], capsys)
    assert out == "" and _only_warnings(err), err
    assert (tmp_path / "scan" / "quiet_master.h5").exists()


def test_quiet_reduce_shows_no_progress(tmp_path, capsys):
    """The reduction's progress and info lines are off; its warning (a scan without positions)
    stays. (Its ``wrote`` line on standard output is the reduce command's own, not checked here.)"""
    out, err = _quiet_run(["reduce", str(_master(tmp_path)), "--out", str(tmp_path / "r.h5"), "--q-bins", "20",
                           "--chi-bins", "8", "--batch-size", "1"], capsys)
    assert _only_warnings(err) and any("no scan positions" in ln for ln in err), err
    assert out.strip() in ("", f"wrote {tmp_path / 'r.h5'}")


def test_quiet_fit_of_a_master_shows_no_reduction_progress(tmp_path, capsys, monkeypatch):
    """`xmodel fit MASTER -q` reduces the master first: no progress of that either (the fit
    itself runs quiet in tests/faults/test_fit_faults.py, the full-disk test)."""
    monkeypatch.setattr("fits.scan.driver.fit_scan", lambda *a, **k: None)
    from xmodel.config import default_paths

    out, err = _quiet_run(["fit", str(_master(tmp_path)), *map(str, default_paths("red")), "--out",
                           str(tmp_path / "fits.h5"), "--q-bins", "20", "--chi-bins", "8"], capsys)
    assert out == "" and _only_warnings(err), err
    assert (tmp_path / "fits_reduced.h5").exists()


# --- numeric options of the commands that simulate, synthesise and study ----------------------

YELLOW = ["configs/experiment/p10_eiger4m.toml", "configs/domains/yellow.toml"]

NUMERIC_OPTION_FAULTS = [
    (["simulate", *YELLOW, "--out", "x.h5", "--counts", "0"],
     r"counts \(--counts\) = 0.0: expected a finite number > 0 \(counts on the valid pixels\), e.g. 1e6"),
    (["simulate", *YELLOW, "--out", "x.h5", "--counts", "nan"], r"counts \(--counts\) = nan"),
    (["simulate", *YELLOW, "--out", "x.h5", "--counts=-1e6"], r"counts \(--counts\) = -1000000.0"),
    (["simulate", *YELLOW, "--out", "x.h5", "--seed", "-3"], r"seed \(--seed\) = -3: expected a finite number >= 0"),
    (["synth", "twin", "--out", "scan", "--batch-size", "0"],
     r"batch_size \(--batch-size\) = 0: expected an integer >= 1 and <= 4096, e.g. 8"),
    (["synth", "twin", "--out", "scan", "--monitor-variation", "1.5"],
     r"monitor_variation \(--monitor-variation\) = 1.5: expected a finite number >= 0 and <= 1"),
    (["synth", "twin", "--out", "scan", "--monitor-variation", "-0.2"], r"monitor_variation .* = -0.2"),
    (["synth", "twin", "--out", "scan", "--dummy-frames", "2"],
     r"dummy_fraction \(--dummy-frames\) = 2.0: expected a finite number >= 0 and <= 1 \(of the frames\)"),
    (["synth", "twin", "--out", "scan", "--position-jitter-um", "inf"],
     r"position_jitter_um \(--position-jitter-um\) = inf: expected a finite number >= 0 \(um\)"),
    (["peaks", *YELLOW, "--min-relative", "-0.1"], (r"min_relative \(--min-relative\) = -0.1: expected a finite "
                                                   r"number >= 0 and <= 1")),
    (["peaks", *YELLOW, "--min-relative", "nan"], r"min_relative \(--min-relative\) = nan"),
    (["study", *YELLOW, "--monte-carlo", "-5"], r"n_replicates \(--monte-carlo\) = -5: expected a finite number >= 0"),
    (["study", *YELLOW, "--seed", "-1"], r"seed \(--seed\) = -1"),
    (["demo", "--out", "demo_out", "--binning", "0"], r"binning \(--binning\) = 0: expected an integer >= 1"),
    (["demo", "--out", "demo_out", "--fit-frames", "-10"], r"fit_frames \(--fit-frames\) = -10"),
]


@pytest.mark.parametrize("argv, match", NUMERIC_OPTION_FAULTS, ids=[" ".join(a[-2:]) for a, _ in NUMERIC_OPTION_FAULTS])
def test_bad_numeric_option_of_a_command(argv, match, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    argv = [str(tmp_path / a) if a in ("x.h5", "scan", "demo_out") else a for a in argv]
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert re.search(match, err) and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []                  # nothing written
