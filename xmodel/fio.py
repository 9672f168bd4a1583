"""Read and write ``.fio`` scan files, the text files of the Sardana/online scans at PETRA III (P10).

Layout (DESY's ``.fio`` format as written by the Sardana ``FIO_FileRecorder`` and ``online``):

* lines starting with ``!`` are comments of the file itself and are skipped;
* ``%c`` starts the comment section (free text: the scan command, user, start time);
* ``%p`` starts the parameter section: ``name = value`` lines (motor positions at the start,
  settings);
* ``%d`` starts the data section: first ``Col N NAME TYPE`` lines (N from 1, TYPE e.g.
  ``DOUBLE``, ``FLOAT``, ``INTEGER``, ``STRING``), then one whitespace-separated row per
  scan point.

The unit of a column is not part of the format; xmodel reads it from a parameter
``<NAME>_unit`` / ``<NAME>_units`` when the file has one (see :mod:`xmodel.positions`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class FioError(ValueError):
    """A ``.fio`` file that does not follow the format."""


@dataclass(frozen=True)
class FioScan:
    """The content of one ``.fio`` file.

    Attributes
    ----------
    path : Path
    comments : list of str
        Lines of the ``%c`` section.
    parameters : dict
        ``%p`` entries, values as float where they parse, else the text.
    columns : list of str
        Column names in file order (``Col N NAME TYPE``).
    data : dict of str to numpy.ndarray
        One array per column, one entry per data row (float64; text columns as str).
    """

    path: Path
    comments: list[str] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        """Number of data rows (scan points)."""
        return len(next(iter(self.data.values()))) if self.data else 0

    def column(self, name: str) -> np.ndarray:
        """The column ``name`` as float64; FioError naming the columns there are if absent."""
        if name not in self.data:
            raise FioError(f"{self.path} has no column {name!r}; its columns are {self.columns}.")
        values = self.data[name]
        if values.dtype.kind not in "fiu":
            raise FioError(f"{self.path}: column {name!r} holds text, not numbers.")
        return values.astype(np.float64)


def _value(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def read_fio(path: str | Path) -> FioScan:
    """Parse a ``.fio`` file (see the module docstring for the layout).

    Raises
    ------
    FioError
        For a missing or unreadable file or a directory, no ``%d`` section, no ``Col`` lines,
        or a data row whose number of values differs from the number of columns (naming the
        line).
    """
    path = Path(path)
    if not path.exists():
        raise FioError(f"Scan file {path} does not exist.")
    if path.is_dir():
        raise FioError(f"Scan file {path} is a directory: expected a .fio file.")
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise FioError(f"Scan file {path} cannot be read: {err.strerror or err}.") from err
    comments: list[str] = []
    parameters: dict = {}
    columns: list[tuple[str, str]] = []
    rows: list[list[str]] = []
    section = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("!"):
            continue
        if line in ("%c", "%p", "%d"):
            section = line
            continue
        if section == "%c":
            comments.append(line)
        elif section == "%p":
            name, sep, value = line.partition("=")
            if not sep:
                raise FioError(f"{path}, line {lineno}: parameter line {line!r} is not 'name = value'.")
            parameters[name.strip()] = _value(value.strip())
        elif section == "%d":
            words = line.split()
            if words[0] == "Col":
                if len(words) < 3:
                    raise FioError(f"{path}, line {lineno}: {line!r} is not 'Col N NAME TYPE'.")
                columns.append((words[2], words[3].upper() if len(words) > 3 else "DOUBLE"))
                continue
            if not columns:
                raise FioError(f"{path}, line {lineno}: data before any 'Col N NAME TYPE' line.")
            if len(words) != len(columns):
                raise FioError(f"{path}, line {lineno}: {len(words)} values but {len(columns)} columns "
                               f"({[c for c, _ in columns]}); the file is truncated or not a .fio scan.")
            rows.append(words)
        else:
            raise FioError(f"{path}, line {lineno}: {line!r} before any %c, %p or %d section; "
                           f"is this a .fio scan file?")
    if not columns:
        raise FioError(f"{path} has no data section (%d followed by 'Col N NAME TYPE' lines).")
    data = {}
    for k, (name, kind) in enumerate(columns):
        text = [r[k] for r in rows]
        if kind == "STRING":
            data[name] = np.asarray(text, dtype=str)
        else:
            try:
                data[name] = np.asarray(text, dtype=np.float64)
            except ValueError as err:
                raise FioError(f"{path}: column {name!r} ({kind}) holds a value that is not a number: {err}.") from err
    return FioScan(path, comments, parameters, [c for c, _ in columns], data)


def write_fio(path: str | Path, columns: dict[str, np.ndarray], *, comments=(), parameters=None) -> Path:
    """Write a ``.fio`` file with DOUBLE columns (the layout :func:`read_fio` reads).

    Parameters
    ----------
    path : output file.
    columns : name -> (n,) values, all of one length.
    comments : lines of the ``%c`` section.
    parameters : ``%p`` entries (e.g. ``{"sample_x_unit": "um"}``).
    """
    path = Path(path)
    arrays = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in columns.items()}
    lengths = {v.size for v in arrays.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths {dict((k, v.size) for k, v in arrays.items())}.")
    lines = ["!", "! Comments", "!", "%c", *comments, "!", "! Parameter", "!", "%p"]
    lines += [f"{k} = {v}" for k, v in (parameters or {}).items()]
    lines += ["!", "! Data", "!", "%d"]
    lines += [f" Col {k + 1} {name} DOUBLE" for k, name in enumerate(arrays)]
    table = np.stack(list(arrays.values()), axis=1) if arrays else np.zeros((0, 0))
    lines += [" " + " ".join(f"{x:.10g}" for x in row) for row in table]
    path.write_text("\n".join(lines) + "\n")
    return path
