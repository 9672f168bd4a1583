"""The files and folders a command writes: checked before any computation, and the message of a
write that fails on the way.

A command checks every path it will write first (`prepare_file`, `prepare_folder`,
`prepare_prefix`), so that an unwritable folder, a folder given where a file is expected (or a
file where a folder is), or an HDF5 file that another program holds open fails at once with an
`OutputError` that names the option and the path, instead of after the computation or in
HDF5's own words. Missing parent folders are created, as `xmodel.figures.save_figure` does.

A write that fails later (a full disk, an exceeded quota, a dropped mount) is described by
`write_failure`: what was being written, where, the cause in plain words, what is safely on disk
and how to finish the run.

`OutputError` is an `OSError`, so the command line maps it to exit code 3 (`xmodel.cli`).
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = [
    "OutputError",
    "describe_os_error",
    "is_locked",
    "prepare_file",
    "prepare_folder",
    "prepare_prefix",
    "write_failure",
]


class OutputError(OSError):
    """An output that cannot be written, or a write that failed (exit code 3 on the command line)."""


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _make_folder(folder: Path, what: str) -> None:
    """Create ``folder`` (and its parents) for ``what``, or say why it cannot be."""
    if folder.is_dir():
        if not _writable(folder):
            raise OutputError(f"{what}: cannot write in the folder {folder} (no permission, or a read-only "
                              f"file system); choose a folder you can write to.")
        return
    base = _nearest_existing(folder)
    if base.exists() and not base.is_dir():
        raise OutputError(f"{what}: cannot create the folder {folder}: {base} is a file, not a folder; "
                          f"choose another path.")
    if not _writable(base):
        raise OutputError(f"{what}: cannot create the folder {folder}: no permission to write in {base} (or a "
                          f"read-only file system); choose a folder you can write to.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{what}: cannot create the folder {folder}: {err.strerror or err}.") from err


def is_locked(path: str | Path) -> bool:
    """True when another program holds the HDF5 file lock of ``path`` (an open h5py or HDF5 handle
    that writes, or reads while we want to write).

    HDF5 locks a file with ``flock`` while it is open (exclusive for writing, shared for reading);
    this asks for the exclusive lock without waiting and gives it back at once. False where HDF5
    does not lock (``HDF5_USE_FILE_LOCKING=FALSE``, or a platform without ``flock``).
    """
    if os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() in ("FALSE", "0", "NO"):
        return False
    try:
        import fcntl
    except ImportError:              # Windows: HDF5 does not lock there either
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        return err.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _locked_message(what: str, path: Path) -> str:
    return (f"{what}: {path} is open in another program (an HDF5 viewer, or another xmodel run, holds its "
            f"file lock); close it there or wait for that run to end, then run the same command again.")


def prepare_file(path: str | Path, option: str, *, hdf5: bool = False, example: str = "out.h5") -> Path:
    """Check that the file ``path`` (of the command-line option ``option``) can be written, creating
    its missing parent folders; returns it as a `Path`.

    Parameters
    ----------
    path : the file to be written (created, replaced or updated in place).
    option : how the user gave it, for the message: ``"--out"``, ``"--figure"``, ``"RESULTS"``.
    hdf5 : the file is an HDF5 file: an existing one must not be open in another program.
    example : a file name for the message when ``path`` is a folder.

    Raises
    ------
    OutputError
        If ``path`` is a folder or not a regular file, an existing file is read-only or (HDF5)
        locked by another program, or its folder cannot be created or written in.
    """
    path = Path(path)
    what = f"{option} {path}"
    if path.is_dir():
        raise OutputError(f"{what} is a folder, but a file is expected here; give a file name, e.g. "
                          f"{path / example}.")
    if path.exists():
        if not path.is_file():
            raise OutputError(f"{what} is not a regular file (a device or a pipe); give a file name.")
        if not os.access(path, os.W_OK):
            raise OutputError(f"{what} exists and is read-only; make it writable or choose another file.")
        if hdf5 and is_locked(path):
            raise OutputError(_locked_message(what, path))
        return path
    _make_folder(path.parent, what)
    return path


def prepare_folder(path: str | Path, option: str) -> Path:
    """Check that the folder ``path`` (of option ``option``) can be written in, creating it (and its
    parents) when missing; returns it as a `Path`.

    Raises
    ------
    OutputError
        If ``path`` is a file, or it (or the folder it would be created in) cannot be written.
    """
    path = Path(path)
    what = f"{option} {path}"
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} is a file, but a folder is expected here; give a folder name, e.g. "
                          f"{path.with_suffix('')}_out.")
    _make_folder(path, what)
    return path


def prepare_prefix(prefix: str | Path, option: str, suffixes: tuple[str, ...]) -> Path:
    """Check the files ``prefix`` with each of ``suffixes`` (``boundary`` -> ``boundary.csv``,
    ``.json``, ``.png``; `pathlib.Path.with_suffix`) as `prepare_file` does; returns ``prefix``."""
    prefix = Path(prefix)
    if prefix.is_dir() or not prefix.name:
        raise OutputError(f"{option} {prefix} is a folder, but a file name prefix is expected here (the "
                          f"command writes {', '.join(prefix.with_suffix(s).name if prefix.name else s for s in suffixes)}); "
                          f"give e.g. {prefix / 'line'}.")
    for s in suffixes:
        prepare_file(prefix.with_suffix(s), option, example="line" + s)
    return prefix


def describe_os_error(err: BaseException) -> tuple[str, str]:
    """``(cause, fix)`` of a failed write, in plain words: a full disk, an exceeded quota, a lock,
    permissions, a read-only file system, else the error's own text."""
    code = getattr(err, "errno", None)
    text = str(err).lower()
    if code == errno.ENOSPC or "no space left" in text:
        return "the disk is full (ENOSPC)", "free some space"
    if code == errno.EDQUOT or "quota exceeded" in text:
        return "the disk quota is exceeded (EDQUOT)", "free some space"
    if "unable to lock file" in text or code in (errno.EAGAIN, errno.EWOULDBLOCK):
        return "the file is open in another program (HDF5 file lock)", "close it there"
    if code in (errno.EACCES, errno.EPERM) or "permission denied" in text:
        return "permission denied", "make the file and its folder writable"
    if code == errno.EROFS or "read-only file system" in text:
        return "the file system is read-only", "choose another output"
    return (str(err) or type(err).__name__), "fix the cause"


def write_failure(path: str | Path, err: BaseException, what: str, kept: str, finish: str = "finish the run"
                  ) -> OutputError:
    """The error of a write that failed mid-run: ``Writing WHAT to PATH failed: CAUSE. KEPT; FIX and
    run the same command again to FINISH.``

    ``kept`` says what is safely on disk (e.g. "The checkpoint stays at frame 32 (frames 0 to 31
    are safely written)").
    """
    cause, fix = describe_os_error(err)
    return OutputError(f"Writing {what} to {path} failed: {cause}. {kept}; {fix} and run the same command "
                       f"again to {finish}.")
