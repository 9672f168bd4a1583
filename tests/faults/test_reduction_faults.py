"""Fault injection, reduction stage: bad numeric options, bad outputs, failed writes, unreadable
frames and kills of ``xmodel reduce``.

The contract: a bad option or output is an error naming the option or the file and what was
expected, with exit code 2 (argparse) or 3 (bad input), and leaves no file behind and no file
overwritten; a failed write leaves the checkpoint at the last batch really written and the rerun
finishes the scan; a frame that cannot be read is flagged and the scan goes on; a killed run
resumed gives exactly the results of an uninterrupted one (NaN-aware comparison of every dataset).

Each row of the tables below is one distinct fault. The scan is 8 frames of a 24 x 20 detector in
three data files (`xmodel.dectris.write_scan`), so the module runs in seconds;
tests/xmodel/test_reduction.py holds the behaviour of valid runs.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.faults.small_scans import fresh_copy, write_small_scan
from xmodel import reduced, reduction
from xmodel.cli import main
from xmodel.positions import grid_positions
from xmodel.reduction import ReductionError, build_bin_map, reduce_scan

N_FRAMES = 8
#: every dataset of /entry/reduction a resumed run must reproduce exactly
COMPARED = ("polar", "radial", "invalid_pixels", "invalid_bins", "unreadable", "counts", "radial_counts", "mask",
            "q_edges", "chi_edges", "positions", "grid_index", "monitor")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """8 frames in data files of 3, 3 and 2 frames; dummy pixels in frames 1 and 6; .fio with positions
    and monitor."""
    folder = tmp_path_factory.mktemp("template")
    write_small_scan(folder, grid_positions((2, 4), 0.5), np.linspace(90.0, 110.0, N_FRAMES),
                     dummies=((1, 3, 4), (1, 15, 9), (6, 20, 2)))
    return folder


@pytest.fixture
def master(template: Path, tmp_path: Path) -> Path:
    return fresh_copy(template, tmp_path)


def cli_args(master: Path, out: Path, *extra: str) -> list[str]:
    fio = master.with_name("s.fio")
    return ["reduce", str(master), "--out", str(out), "--q-bins", "12", "--chi-bins", "8", "--batch-size", "2",
            "--positions", str(fio), "--monitor", f"{fio}:monitor", *extra]


@pytest.fixture(scope="module")
def reference(template: Path, tmp_path_factory) -> Path:
    """The uninterrupted reduction of the template scan (the options of `cli_args`)."""
    out = tmp_path_factory.mktemp("reference") / "ref.h5"
    assert main(cli_args(template / "s_master.h5", out, "-q")) == 0
    return out


def assert_same_reduction(a: Path, b: Path) -> None:
    """Every dataset of ``/entry/reduction`` equal, NaN equal to NaN; the same checkpoint."""
    with h5py.File(a, "r") as f, h5py.File(b, "r") as g:
        fa, fb = f["entry/reduction"], g["entry/reduction"]
        assert fa.attrs["frames_done"] == fb.attrs["frames_done"] == N_FRAMES
        for name in COMPARED:
            assert (name in fa) == (name in fb), name
            if name in fa:
                np.testing.assert_array_equal(fa[name][()], fb[name][()], err_msg=name, strict=True)
        assert ("intensity_map" in f["entry"]) == ("intensity_map" in g["entry"])


def frames_done(out: Path) -> int:
    with h5py.File(out, "r") as f:
        return int(f["entry/reduction"].attrs["frames_done"])


# --- numeric options at the edge --------------------------------------------------------------

OPTION_FAULTS = [
    ("q-bins 0", ["--q-bins", "0"], 3, r"q_bins \(--q-bins\) = 0: expected an integer from 1 to 100000, e\.g\. 500\."),
    ("q-bins negative", ["--q-bins", "-5"], 3, r"q_bins \(--q-bins\) = -5: expected an integer from 1 to 100000"),
    ("q-bins huge", ["--q-bins", "1000000"], 3, r"q_bins \(--q-bins\) = 1000000: expected an integer from 1 to 100000"),
    ("q-bins not a number", ["--q-bins", "many"], 2, r"argument --q-bins: invalid int value: 'many'"),
    ("chi-bins 0", ["--chi-bins", "0"], 3, r"chi_bins \(--chi-bins\) = 0: expected an integer from 1 to 36000"),
    ("chi-bins negative", ["--chi-bins", "-360"], 3, r"chi_bins \(--chi-bins\) = -360: expected an integer from 1"),
    ("chi-bins huge", ["--chi-bins", "360000"], 3, (r"chi_bins \(--chi-bins\) = 360000: expected an integer from 1 to "
                                                    r"36000, e\.g\. 360")),
    ("chi-bins fraction", ["--chi-bins", "2.5"], 2, r"argument --chi-bins: invalid int value: '2\.5'"),
    ("too many bins", ["--q-bins", "100000", "--chi-bins", "36000"], 3,
     r"q_bins x chi_bins \(--q-bins 100000 --chi-bins 36000\) = 3600000000 bins per frame: expected at most 67108864"),
    ("hot-pixels negative", ["--hot-pixels", "-1"], 3,
     r"hot_pixels \(--hot-pixels\) = -1: expected an integer >= 0 \(frames of the hot-pixel test, 0: off\)"),
    ("batch-size 0", ["--batch-size", "0"], 3,
     r"batch_size \(--batch-size\) = 0: expected an integer >= 1 \(frames per sparse product\), e\.g\. 16\."),
    ("batch-size negative", ["--batch-size", "-4"], 3, r"batch_size \(--batch-size\) = -4: expected an integer >= 1"),
    ("workers 0", ["--workers", "0"], 3, (r"workers \(--workers\) = 0: expected an integer >= 1 \(threads; more than 2 "
                                          r"work as 2\)")),
    ("q-range reversed", ["--q-range", "0.5", "0.1"], 3,
     (r"q_range \(--q-range\) = \(0\.5, 0\.1\): expected two finite numbers LO HI with 0 <= LO < HI \(1/A\), "
      r"e\.g\. --q-range 0\.01 3\.4")),
    ("q-range nan", ["--q-range", "nan", "0.5"], 3, r"q_range \(--q-range\) = \(nan, 0\.5\): expected two finite"),
    ("q-range infinite", ["--q-range", "0.01", "inf"], 3, r"q_range \(--q-range\) = \(0\.01, inf\): expected two"),
    ("q-range negative", ["--q-range", "-0.1", "0.5"], 3, r"q_range \(--q-range\) = \(-0\.1, 0\.5\): .*0 <= LO < HI"),
    ("q-range from 0 with log bins", ["--q-range", "0", "0.5"], 3,
     r"q_range \(--q-range\) = \(0\.0, 0\.5\): log-spaced q bins need 0 < LO < HI \(1/A\).*or --q-spacing linear"),
    ("q-range off the detector", ["--q-range", "50", "60"], 3,
     (r"No valid pixel of .*s_master\.h5 lies in the bins: q from 50 to 60 1/A \(--q-range\), chi from -180 to 180 deg "
      r"\(--chi-range\), while its valid pixels span q from 0\.0\d+ to 0\.1\d+ 1/A")),
    ("chi-range over 360 degrees", ["--chi-range", "0", "400"], 3,
     r"chi_range \(--chi-range\) = \(0\.0, 400\.0\) spans more than 360 degrees"),
    ("chi-range empty", ["--chi-range", "10", "10"], 3,
     r"chi_range \(--chi-range\) = \(10\.0, 10\.0\): expected two finite numbers LO HI with LO < HI \(degrees\)"),
    ("q-spacing unknown", ["--q-spacing", "sqrt"], 2, r"argument --q-spacing: invalid choice: 'sqrt'"),
]


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """Exit code and standard error of ``xmodel ARGS`` run in-process (argparse's exits included)."""
    try:
        rc = main(args)
    except SystemExit as exit_:          # argparse's own usage errors
        rc = exit_.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("extra, code, match", [r[1:] for r in OPTION_FAULTS], ids=[r[0] for r in OPTION_FAULTS])
def test_bad_option(master: Path, tmp_path: Path, capsys, extra: list[str], code: int, match: str) -> None:
    """A bad numeric option: the exit code of the CLI conventions, one message naming the option, and
    no output file."""
    out = tmp_path / "r.h5"
    rc, err = run_cli(cli_args(master, out, "-q", *extra), capsys)
    assert rc == code
    assert re.search(match, err) and err.count("error:") == 1, err
    assert not out.exists() and not out.with_name("r.h5.partial").exists()


def test_huge_batch_size_is_capped_at_the_frames(master: Path, tmp_path: Path, reference: Path) -> None:
    """A batch larger than the scan reads the whole scan as one batch: the same results, no memory
    for a billion frames."""
    out = tmp_path / "r.h5"
    assert main(cli_args(master, out, "-q", "--batch-size", str(10**9))) == 0
    assert_same_reduction(out, reference)


LIBRARY_FAULTS = [
    ("batch size a boolean", {"batch_size": True}, r"batch_size \(--batch-size\) = True: expected an integer >= 1"),
    ("workers a fraction", {"workers": 1.5}, r"workers \(--workers\) = 1\.5: expected an integer >= 1"),
    ("hot pixels a word", {"hot_pixels": "some"}, r"hot_pixels \(--hot-pixels\) = 'some': expected an integer >= 0"),
    ("positions of 5 frames", {"positions_um": np.zeros((5, 2))},
     (r"positions_um has shape \(5, 2\) but .*s_master\.h5 holds 8 frames: expected \(8, 2\), one \(y, x\) row per "
      r"frame")),
    ("positions with nan", {"positions_um": np.where(np.arange(8)[:, None] == 2, np.nan, grid_positions((2, 4), 1.0))},
     r"positions_um of frame 2 is \[nan, nan\]: expected finite; 1 such frames"),
    ("monitor of 3 frames", {"monitor": np.ones(3)}, r"monitor has shape \(3,\) but .*holds 8 frames: expected \(8,\)"),
    ("monitor with a zero", {"monitor": np.r_[1.0, 0.0, np.ones(6)]},
     (r"monitor of frame 1 is 0\.0: expected a finite value > 0 \(a monitor of zero or below cannot normalise a "
      r"frame\)")),
    ("monitor negative", {"monitor": -np.ones(8)}, r"monitor of frame 0 is -1\.0: .*; 8 such frames"),
    ("bin map of another detector", {"bins": build_bin_map(np.ones((4, 4)), np.zeros((4, 4)), np.zeros((4, 4), bool),
                                                            reduction.PolarBins(np.linspace(0, 2, 3),
                                                                                np.linspace(-180, 180, 3)))},
     r"The bin map is for a detector of shape \(4, 4\) but .*s_master\.h5 holds frames of shape \(24, 20\)"),
    ("bins off the detector", {"bins": reduction.PolarBins(np.linspace(5.0, 6.0, 4), np.linspace(-180, 180, 5))},
     r"No valid pixel of .*s_master\.h5 lies in the bins: q from 5 to 6 1/A"),
]


@pytest.mark.parametrize("kwargs, match", [r[1:] for r in LIBRARY_FAULTS], ids=[r[0] for r in LIBRARY_FAULTS])
def test_bad_library_argument(master: Path, tmp_path: Path, kwargs: dict, match: str) -> None:
    options = {"q_bins": 12, "chi_bins": 8, "progress": False} | kwargs
    with pytest.raises(ReductionError, match=match):
        reduce_scan(master, tmp_path / "r.h5", **options)
    assert not (tmp_path / "r.h5").exists()


# --- the output: a directory, a locked file, another kind of file ------------------------------

def _unfinished(master: Path, out: Path) -> Path:
    """A reduction of ``master`` (the options of `cli_args`) stopped after its first batch."""
    assert main(cli_args(master, out, "-q")) == 0
    with h5py.File(out, "r+") as f:
        f["entry/reduction"].attrs["frames_done"] = 2
    return out


def _hdf5(groups: tuple[str, ...]):
    def make(master: Path, out: Path) -> Path:
        with h5py.File(out, "w") as f:
            for g in groups:
                f.create_group(g)
        return out
    return make


def _without_checkpoint(master: Path, out: Path) -> Path:
    _unfinished(master, out)
    with h5py.File(out, "r+") as f:
        del f["entry/reduction"].attrs["frames_done"]
    return out


def _truncated(master: Path, out: Path) -> Path:
    _unfinished(master, out)
    with open(out, "r+b") as fh:
        fh.truncate(out.stat().st_size // 2)
    return out


def _folder(master: Path, out: Path) -> Path:
    out.mkdir()
    return out


def _under_a_file(master: Path, out: Path) -> Path:
    out.write_text("notes\n")
    return out / "r.h5"


OUTPUT_FAULTS = [
    ("a directory", _folder,
     r"out \(--out\) .*out\.h5 is a directory: give the name of the results file, e\.g\. --out .*out\.h5/reduced\.h5\."),
    ("in a missing folder", lambda m, out: out.parent / "nope" / "r.h5",
     r"The folder .*nope of out \(--out\) .*r\.h5 does not exist: create the folder first or choose another output"),
    ("under a file", _under_a_file, r"The folder .*out\.h5 of out \(--out\) .*r\.h5 is a file, not a folder"),
    ("the master file", lambda m, out: m,
     (r"The output .*s_master\.h5 is a Dectris master file, not an xmodel reduction \(no /entry/reduction\); xmodel "
      r"leaves it as it is: choose another output path\.")),
    ("a data file", lambda m, out: m.with_name("s_data_000001.h5"),
     r"The output .*s_data_000001\.h5 is an HDF5 file of another kind \(top level: entry\), not an xmodel reduction"),
    ("a fit results file", _hdf5(("entry/fits",)), (r"The output .*out\.h5 is an xmodel fit results file, not an xmodel "
                                                  r"reduction")),
    ("a twin's truth file", _hdf5(("truth",)), r"is a twin's truth file, not an xmodel reduction"),
    ("an empty HDF5 file", _hdf5(()), r"is an HDF5 file of another kind \(top level: empty\)"),
    ("a text file", lambda m, out: out.write_text("frame,q\n") and out,
     r"The output .*out\.h5 is not an HDF5 file \(no HDF5 signature at its start\); xmodel leaves it as it is"),
    ("an empty file", lambda m, out: out.write_bytes(b"") or out, r"The output .*out\.h5 is not an HDF5 file"),
    ("a truncated reduction", _truncated,
     (r"The output .*out\.h5 is truncated: it holds \d+ of its \d+ bytes \(an incomplete copy or an interrupted "
      r"transfer\); copy it again; xmodel leaves it as it is")),
    ("a reduction without checkpoint", _without_checkpoint,
     r"The output .*out\.h5 holds a /entry/reduction without frames_done or polar"),
]


@pytest.mark.parametrize("make, match", [r[1:] for r in OUTPUT_FAULTS], ids=[r[0] for r in OUTPUT_FAULTS])
def test_bad_output(master: Path, tmp_path: Path, make, match: str) -> None:
    """A precise message (never "delete it") and the file there left byte for byte as it was."""
    out = make(master, tmp_path / "out.h5")
    before = out.read_bytes() if out.is_file() else None
    with pytest.raises((ReductionError, reduced.OutputError), match=match) as info:
        reduce_scan(master, out, q_bins=12, chi_bins=8, batch_size=2, progress=False)
    assert "delete" not in str(info.value)
    assert (out.read_bytes() if out.is_file() else None) == before


def test_locked_output_is_named_as_locked(master: Path, tmp_path: Path, capsys) -> None:
    """An unfinished reduction that another process holds open for writing (HDF5's file lock)."""
    out = _unfinished(master, tmp_path / "r.h5")
    fd = os.open(out, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        rc, err = run_cli(cli_args(master, out, "-q"), capsys)
    finally:
        os.close(fd)
    assert rc == 3 and "delete" not in err
    assert re.search(r"The output .*r\.h5 is locked: another process holds it open for writing \(HDF5 file lock\); "
                     r"wait for that process to end or stop it\.", err), err
    assert frames_done(out) == 2


def test_output_open_in_another_process(master: Path, tmp_path: Path, capsys) -> None:
    """The same with a real second process that has the output open with h5py for writing."""
    out = _unfinished(master, tmp_path / "r.h5")
    holder = subprocess.Popen([sys.executable, "-c", ("import sys, h5py; f = h5py.File(sys.argv[1], 'r+'); "
                               "print('open', flush=True); sys.stdin.read()"), str(out)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        rc, err = run_cli(cli_args(master, out, "-q"), capsys)
    finally:
        holder.communicate("", timeout=30)
    assert rc == 3 and re.search(r"The output .*r\.h5 is locked: another process holds it open for writing", err), err
    assert main(cli_args(master, out, "-q")) == 0 and frames_done(out) == N_FRAMES


# --- a write that fails after N batches ---------------------------------------------------------

class Failing:
    """Replaces a writer: works ``n`` times, then writes part of the next batch and raises ``error``."""

    def __init__(self, real, n: int, error: OSError, partial: bool = True):
        self.real, self.n, self.error, self.partial, self.calls = real, n, error, partial, 0

    def __call__(self, f, *args):
        self.calls += 1
        if self.calls > self.n:
            if self.partial and len(args) > 1:       # half of the batch reaches the disk
                f["entry/reduction/polar"][args[0]] = args[1][0]
            raise self.error
        return self.real(f, *args)


ENOSPC = OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("n_batches, workers", [(0, "2"), (1, "1"), (3, "2")])
def test_disk_full_after_n_batches(master: Path, tmp_path: Path, reference: Path, monkeypatch, capsys,
                                   n_batches: int, workers: str) -> None:
    """ENOSPC while writing batch N + 1: exit code 3, a message naming the frames, the file and the
    checkpoint, the checkpoint at the last batch really written; the rerun completes the scan."""
    out = tmp_path / "r.h5"
    monkeypatch.setattr(reduction, "_write_batch", Failing(reduction._write_batch, n_batches, ENOSPC))
    rc, err = run_cli(cli_args(master, out, "-q", "--workers", workers), capsys)
    done = 2 * n_batches
    kept = f"frames 0 to {done - 1} are safely written" if done else "no frame is written yet"
    assert rc == 3
    assert re.search(rf"Writing frames {done} to {done + 1} to .*r\.h5 failed: the disk is full \(ENOSPC\)\. The "
                     rf"checkpoint stays at frame {done} \({kept}\); free some space and run the same command again "
                     rf"to finish the scan\.", err), err
    assert frames_done(out) == done
    monkeypatch.undo()
    assert main(cli_args(master, out, "-q", "--workers", workers)) == 0
    assert_same_reduction(out, reference)


WRITE_FAILURES = [
    ("checkpoint write, I/O error", "set_frames_done", OSError(errno.EIO, "Input/output error"), 2,
     (r"Writing frames 4 to 5 to .*r\.h5 failed: \[Errno 5\] Input/output error\. The checkpoint stays at frame 4 "
      r"\(frames 0 to 3 are safely written\); fix the cause and run the same command again")),
    ("checkpoint write, disk full", "set_frames_done", ENOSPC, 0,
     (r"Writing frames 0 to 1 to .*r\.h5 failed: the disk is full \(ENOSPC\)\. The checkpoint stays at frame 0 "
      r"\(no frame is written yet\)")),
    ("intensity map", "write_intensity_map", ENOSPC, 0,
     (r"Writing the intensity map to .*r\.h5 failed: the disk is full \(ENOSPC\)\. Every frame is written \(the "
      r"checkpoint is at frame 8\); free some space and run the same command again to write the map\.")),
]


@pytest.mark.parametrize("name, error, n, match", [r[1:] for r in WRITE_FAILURES], ids=[r[0] for r in WRITE_FAILURES])
def test_other_failed_writes(master: Path, tmp_path: Path, reference: Path, monkeypatch, capsys,
                             name: str, error: OSError, n: int, match: str) -> None:
    out = tmp_path / "r.h5"
    monkeypatch.setattr(reduced, name, Failing(getattr(reduced, name), n, error, partial=False))
    rc, err = run_cli(cli_args(master, out, "-q"), capsys)
    assert rc == 3 and re.search(match, err), err
    monkeypatch.undo()
    assert main(cli_args(master, out, "-q")) == 0
    assert_same_reduction(out, reference)


# --- frames that cannot be read -----------------------------------------------------------------

def damage(master: Path, frame: int) -> tuple[Path, bytes]:
    """Overwrite the start of ``frame``'s chunk; returns the data file and its intact bytes."""
    k, index = divmod(frame, 3)
    path = master.with_name(f"s_data_{k + 1:06d}.h5")
    intact = path.read_bytes()
    with h5py.File(path, "r") as f:
        offset = f["entry/data/data"].id.get_chunk_info(index).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * 16)
    return path, intact


@pytest.mark.parametrize("bad, workers", [([4], "2"), ([0, 7], "1"), ([2, 3], "2")],
                         ids=["frame 4", "first and last", "across two files"])
def test_unreadable_frame_is_flagged_and_the_scan_goes_on(master: Path, tmp_path: Path, reference: Path, capsys,
                                                          bad: list[int], workers: str) -> None:
    """A chunk that does not decode: that frame is NaN and flagged, every other frame is reduced; the
    log names the frame and the file even with -q. Once the file is copied again, the same command
    reads only those frames again and gives the uninterrupted result."""
    copies = [damage(master, i) for i in bad]
    out = tmp_path / "r.h5"
    rc, err = run_cli(cli_args(master, out, "-q", "--workers", workers), capsys)
    assert rc == 0
    for i in bad:
        assert re.search(rf"Cannot read frame {i} \(frame {i % 3} of .*s_data_00000{i // 3 + 1}\.h5:/entry/data/data, "
                         rf"expected uint32 of shape \(24, 20\)\).*The frame is left out \(NaN, flagged in "
                         rf"/entry/reduction/unreadable\) and the scan goes on", err), err
    assert f"{len(bad)} of 8 frames could not be read (frames {', '.join(map(str, bad))})" in err
    red = reduced.open_reduced(out)
    assert np.flatnonzero(red.unreadable).tolist() == bad and red.frames_done == N_FRAMES
    assert np.isnan(red.polar(bad)).all() and (red.frame_pixel_counts(bad[0]) == 0).all()
    assert red.invalid_pixels[bad].tolist() == [int(red.radial_counts.sum())] * len(bad)
    good = [i for i in range(N_FRAMES) if i not in bad]
    ref = reduced.open_reduced(reference)
    np.testing.assert_array_equal(red.polar(good), ref.polar(good))
    for path, intact in copies:          # the data files copied again from the beamline
        path.write_bytes(intact)
    rc, err = run_cli(cli_args(master, out, "--workers", workers), capsys)
    assert rc == 0 and f"reading again the {len(bad)} frames an earlier run could not read" in err
    assert_same_reduction(out, reference)


def test_unreadable_frame_in_the_hot_pixel_test(master: Path, tmp_path: Path, capsys) -> None:
    damage(master, 5)
    rc, err = run_cli(cli_args(master, tmp_path / "r.h5", "-q", "--hot-pixels", "8"), capsys)
    assert rc == 0 and "hot-pixel test: Cannot read frame 5" in err
    assert np.flatnonzero(reduced.open_reduced(tmp_path / "r.h5").unreadable).tolist() == [5]


# --- --quiet ----------------------------------------------------------------------------------

def test_quiet_prints_no_progress(master: Path, tmp_path: Path, capsys) -> None:
    rc, err = run_cli(cli_args(master, tmp_path / "loud.h5"), capsys)
    assert rc == 0 and "reduce: 8/8 frames (100 %)" in err
    assert main(cli_args(master, tmp_path / "quiet.h5", "--quiet")) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.strip() == f"wrote {tmp_path / 'quiet.h5'}"


# --- kills at random points, then resume ------------------------------------------------------

class Killed(BaseException):
    """A kill: not an Exception, so nothing on the way may catch it (as KeyboardInterrupt)."""


class KillSwitch:
    """Kills a run at one point of batch ``batch`` (counted from the start of the run): ``write``
    (part of the batch on disk), ``checkpoint`` (written, checkpoint not advanced) or ``after``
    (checkpoint advanced)."""

    def __init__(self, where: str, batch: int):
        self.where, self.batch, self.written = where, batch, 0
        self.real_write, self.real_done = reduction._write_batch, reduced.set_frames_done

    def write(self, f, start, *args):
        if self.where == "write" and self.written == self.batch:
            f["entry/reduction/polar"][start] = args[0][0]
            raise Killed
        self.written += 1
        self.real_write(f, start, *args)

    def checkpoint(self, f, done):
        if self.where == "checkpoint" and self.written == self.batch + 1:
            raise Killed
        self.real_done(f, done)

    def progress(self, done, total):
        if self.where == "after" and self.written == self.batch + 1:
            raise Killed


def kill_points(rng: np.random.Generator, n_batches: int, kills: int) -> list[tuple[str, int]]:
    """``kills`` random (where, batch) pairs of `KillSwitch`."""
    return [(str(rng.choice(["write", "checkpoint", "after"])), int(rng.integers(0, n_batches - 1)))
            for _ in range(kills)]


@pytest.mark.parametrize("workers", [1, 2])
def test_killed_and_resumed_runs_equal_an_uninterrupted_one(master: Path, tmp_path: Path, monkeypatch,
                                                            workers: int) -> None:
    """Three kills at random points (seeded) of a scan with dummy pixels and an unreadable frame; each
    run resumes the last; the final file equals an uninterrupted run in every dataset (NaN-aware)."""
    damage(master, 3)
    options = {"q_bins": 12, "chi_bins": 8, "batch_size": 2, "workers": workers, "progress": False,
               "positions_um": grid_positions((2, 4), 0.5)}
    reference = reduce_scan(master, tmp_path / "ref.h5", **options)
    out = tmp_path / "r.h5"
    history = []
    for where, batch in kill_points(np.random.default_rng(7 + workers), N_FRAMES // 2, 3):
        switch = KillSwitch(where, batch)
        monkeypatch.setattr(reduction, "_write_batch", switch.write)
        monkeypatch.setattr(reduced, "set_frames_done", switch.checkpoint)
        before = frames_done(out) if out.exists() else 0
        try:
            reduce_scan(master, out, **(options | {"progress": switch.progress}))
            history.append((where, batch, "finished"))
        except Killed:
            history.append((where, batch, frames_done(out) if out.exists() else None))
        monkeypatch.undo()
        assert not out.exists() or frames_done(out) >= before
    assert any(h[2] not in ("finished", None) for h in history), history
    reduce_scan(master, out, **options)
    assert_same_reduction(out, reference)
