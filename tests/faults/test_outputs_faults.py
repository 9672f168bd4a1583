"""Fault injection, outputs: every file and folder a command writes is checked before any
computation (`xmodel.outputs`). A folder given where a file is expected (or a file where a folder
is), a folder that cannot be created or written in, a read-only file, or an HDF5 file that another
process holds open is exit code 3 with a message naming the option and the path, no traceback,
and nothing written.

Every row is one command's output with one fault. Commands whose output checks come first run
in-process on stand-in inputs (a tiny reduced scan, the shipped configs): nothing is computed.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from xmodel.cli import main
from xmodel.config import default_paths
from xmodel.outputs import (
    OutputError,
    is_locked,
    prepare_file,
    prepare_folder,
    write_failure,
)

YELLOW = [str(p) for p in default_paths("yellow")]
RED = [str(p) for p in default_paths("red")]


def _tiny(folder: Path) -> str:
    """A reduced scan of 4 frames (2 x 2 polar bins) with positions: a stand-in input."""
    path = folder / "tiny.h5"
    if not path.exists():
        with h5py.File(path, "w") as f:
            g = f.create_group("entry/reduction")
            g["polar"] = np.zeros((4, 2, 2), np.float32)
            g["q"], g["chi"] = np.array([0.08, 2.1]), np.array([-90.0, 90.0])
            g["positions"] = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return str(path)


#: files a command writes: label -> (argv with the output path P, the option the message names)
FILES = {
    "simulate --out": (lambda t, p: ["simulate", *YELLOW, "--out", p], "--out"),
    "simulate --figure": (lambda t, p: ["simulate", *YELLOW, "--out", str(t / "ok.h5"), "--figure", p], "--figure"),
    "fit --out": (lambda t, p: ["fit", _tiny(t), *RED, "--out", p], "--out"),
    "classify --figure": (lambda t, p: ["classify", _tiny(t), "--figure", p], "--figure"),
    "ccf --figure": (lambda t, p: ["ccf", _tiny(t), "--q1", "0.08", "--q2", "2.1", "--figure", p], "--figure"),
    "study --out": (lambda t, p: ["study", *YELLOW, "--out", p], "--out"),
    "boundary --out": (lambda t, p: ["boundary", _tiny(t), *RED, "--from", "0,0", "--to", "1,0", "--out",
                                     str(Path(p).with_suffix(""))], "--out"),
}
#: the HDF5 ones among them (another process may hold them open)
HDF5 = ("simulate --out", "fit --out", "study --out")
#: folders a command writes into
FOLDERS = {
    "synth --out": (lambda t, p: ["synth", "twin", "--out", p], "--out"),
    "demo --out": (lambda t, p: ["demo", "--out", p], "--out"),
    "qmap --figures": (lambda t, p: ["qmap", _tiny(t), "--family", "200", "--figures", p], "--figures"),
    "study --figures": (lambda t, p: ["study", *YELLOW, "--figures", p], "--figures"),
}
#: inputs a command writes its results into
IN_PLACE = {
    "classify RESULTS": lambda p: ["classify", p],
    "qmap RESULTS": lambda p: ["qmap", p, "--family", "200"],
}


@pytest.fixture
def unwritable(tmp_path, monkeypatch) -> Path:
    """A folder nobody may write in (for root, who ignores the mode bits, `os.access` says so)."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    old = [folder / name for name in ("old.png", "old.h5", "old.csv")]
    for p in old:
        p.write_bytes(b"")
    for p in (*old, folder):
        p.chmod(0o555 if p.is_dir() else 0o444)
    if getattr(os, "geteuid", lambda: -1)() == 0:
        real = os.access

        def access(path, mode, *a, **k):
            inside = Path(path).resolve() == folder.resolve() or folder.resolve() in Path(path).resolve().parents
            return False if inside and mode & os.W_OK else real(path, mode, *a, **k)

        monkeypatch.setattr(os, "access", access)
    yield folder
    folder.chmod(0o755)


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    """An HDF5 file that another process holds open for writing (HDF5's file lock)."""
    folder = tmp_path_factory.mktemp("locked")
    path = folder / "held.h5"
    _tiny(folder)
    with h5py.File(folder / "tiny.h5", "r") as src, h5py.File(path, "w") as f:
        src.copy("entry", f)
    holder = subprocess.Popen([sys.executable, "-c", ("import sys, h5py\nf = h5py.File(sys.argv[1], 'a')\n"
                               "print('holding', flush=True)\nsys.stdin.read()"), str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    yield path
    holder.stdin.close()
    holder.wait(timeout=30)


def _fails(argv: list[str], capsys, pattern: str) -> str:
    assert main(argv) == 3, argv
    err = capsys.readouterr().err
    assert re.search(pattern, err), err
    assert err.startswith("xmodel ") and "error: " in err and "Traceback" not in err
    return err


def _file_cases():
    out = []
    for label in FILES:
        for fault in ("a folder", "in a file", "folder read-only", "parent read-only", "file read-only"):
            out.append((label, fault))
        if label in HDF5:
            out.append((label, "locked"))
    return out


@pytest.mark.parametrize("label, fault", _file_cases(), ids=[f"{a}: {b}" for a, b in _file_cases()])
def test_output_file_that_cannot_be_written(label, fault, tmp_path, capsys, request):
    build, option = FILES[label]
    suffix = ".h5" if label in HDF5 else ".png"
    if label == "boundary --out":
        suffix = ".csv"
    if fault == "a folder":
        path = tmp_path / f"taken{suffix}"
        path.mkdir()
        pattern = rf"{option} .*taken(\{suffix})? is a folder, but a (file|file name prefix) is expected here"
    elif fault == "in a file":
        (tmp_path / "notes.txt").write_text("a file, not a folder")
        path = tmp_path / "notes.txt" / "sub" / f"out{suffix}"
        pattern = rf"{option} .*out\{suffix}: cannot create the folder .*notes.txt/sub: .*notes.txt is a file, not a folder"
    elif fault == "folder read-only":
        path = request.getfixturevalue("unwritable") / f"new{suffix}"
        pattern = rf"{option} .*new\{suffix}: cannot write in the folder .*readonly \(no permission, or a read-only"
    elif fault == "parent read-only":
        path = request.getfixturevalue("unwritable") / "sub" / f"new{suffix}"
        pattern = rf"{option} .*new\{suffix}: cannot create the folder .*readonly/sub: no permission to write in"
    elif fault == "file read-only":
        path = request.getfixturevalue("unwritable") / f"old{suffix}"
        pattern = rf"{option} .*old\{suffix} exists and is read-only; make it writable or choose another file"
    else:
        path = request.getfixturevalue("locked")
        pattern = (rf"{option} .*held\.h5: .*held\.h5 is open in another program \(an HDF5 viewer, or another xmodel "
                   rf"run, holds its file lock\); close it there")
    argv = build(tmp_path, str(path))
    before = sorted(p.name for p in tmp_path.iterdir())
    _fails(argv, capsys, pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == before          # nothing written


def _folder_cases():
    faults = ("a file", "in a file", "read-only", "parent read-only")
    return [(label, fault) for label in FOLDERS for fault in faults]


@pytest.mark.parametrize("label, fault", _folder_cases(), ids=[f"{a}: {b}" for a, b in _folder_cases()])
def test_output_folder_that_cannot_be_made(label, fault, tmp_path, capsys, request):
    build, option = FOLDERS[label]
    if fault == "a file":
        path = tmp_path / "figures.png"
        path.write_bytes(b"")
        pattern = rf"{option} .*figures.png is a file, but a folder is expected here; give a folder name"
    elif fault == "in a file":
        (tmp_path / "notes.txt").write_text("a file, not a folder")
        path = tmp_path / "notes.txt" / "figures"
        pattern = rf"{option} .*notes.txt/figures: cannot create the folder .*: .*notes.txt is a file, not a folder"
    elif fault == "read-only":
        path = request.getfixturevalue("unwritable")
        pattern = rf"{option} .*readonly: cannot write in the folder .*readonly \(no permission"
    else:
        path = request.getfixturevalue("unwritable") / "figures"
        pattern = rf"{option} .*figures: cannot create the folder .*readonly/figures: no permission to write in"
    argv = build(tmp_path, str(path))
    before = sorted(p.name for p in tmp_path.iterdir())
    _fails(argv, capsys, pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("label", list(IN_PLACE))
def test_results_written_in_place_while_another_process_holds_them(label, locked, capsys):
    _fails(IN_PLACE[label](str(locked)), capsys,
           r"RESULTS \(written in place: /entry/\w+(/200)?\) .*held\.h5: .*is open in another program")


@pytest.mark.parametrize("label", list(IN_PLACE))
def test_results_written_in_place_that_are_read_only(label, unwritable, capsys):
    _fails(IN_PLACE[label](str(unwritable / "old.h5")), capsys, r"RESULTS .*old\.h5 exists and is read-only")


def test_boundary_prefix_whose_file_is_a_folder(tmp_path, capsys):
    (tmp_path / "line.json").mkdir()
    _fails(["boundary", _tiny(tmp_path), *RED, "--from", "0,0", "--to", "1,0", "--out", str(tmp_path / "line")],
           capsys, r"--out .*line\.json is a folder, but a file is expected here")
    assert not (tmp_path / "line.csv").exists()


def test_fit_of_a_master_checks_the_reduction_it_writes(tmp_path, capsys):
    """`xmodel fit MASTER --out F` also writes F_reduced.h5: a folder in its place is refused
    before the reduction starts."""
    master = tmp_path / "s_master.h5"
    master.write_bytes(b"")
    (tmp_path / "fits_reduced.h5").mkdir()
    _fails(["fit", str(master), *RED, "--out", str(tmp_path / "fits.h5")], capsys,
           r"--out \(its reduction\) .*fits_reduced\.h5 is a folder, but a file is expected here")


# --- the checks themselves -------------------------------------------------------------------

def test_lock_is_seen_only_while_held(tmp_path):
    path = tmp_path / "x.h5"
    h5py.File(path, "w").close()
    assert not is_locked(path) and not is_locked(tmp_path / "missing.h5")
    holder = subprocess.Popen([sys.executable, "-c", ("import sys, h5py\nf = h5py.File(sys.argv[1], 'r')\n"
                               "print('holding', flush=True)\nsys.stdin.read()"), str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        assert is_locked(path)                      # a reader blocks a writer too
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not is_locked(path)


def test_missing_parent_folders_are_created(tmp_path):
    assert prepare_file(tmp_path / "a" / "b" / "x.h5", "--out", hdf5=True) == tmp_path / "a" / "b" / "x.h5"
    assert (tmp_path / "a" / "b").is_dir() and not (tmp_path / "a" / "b" / "x.h5").exists()
    assert prepare_folder(tmp_path / "c" / "d", "--figures").is_dir()


@pytest.mark.parametrize("err, cause", [
    (OSError(28, "No space left on device"), r"the disk is full \(ENOSPC\)\. .*; free some space and"),
    (OSError(122, "Disk quota exceeded"), r"the disk quota is exceeded \(EDQUOT\)\. .*; free some space and"),
    (OSError(13, "Permission denied"), r"permission denied\. .*; make the file and its folder writable and"),
    (OSError(30, "Read-only file system"), r"the file system is read-only\. .*; choose another output and"),
    (OSError(11, "Unable to synchronously open file (unable to lock file, errno = 11)"),
     r"the file is open in another program \(HDF5 file lock\)\. .*; close it there and"),
    (OSError(5, "Input/output error"), r"\[Errno 5\] Input/output error\. .*; fix the cause and"),
])
def test_write_failure_says_the_cause_in_plain_words(err, cause):
    exc = write_failure("out.h5", err, "frames 4 to 7", "The checkpoint stays at frame 4", "finish the scan")
    assert isinstance(exc, OutputError) and isinstance(exc, OSError)
    assert re.fullmatch(rf"Writing frames 4 to 7 to out\.h5 failed: {cause} run the same command again to finish "
                        rf"the scan\.", str(exc)), str(exc)
