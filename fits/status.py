"""Outcomes of fits, one vocabulary for frames and profiles (optimistix-style: values are messages).

One `FitStatus` is recorded per fitted pattern (scan fit, pattern and domain fits), per fitted
radial profile (`fits.analyses.peak_profile`) and per lattice constant of a scan point
(`fits.analyses.shell_comb`, `fits.analyses.qmap`), instead of raising, so that one bad frame or
profile never stops a scan. Files store `FitStatus.code`, a small stable integer, and every status
dataset carries the attribute ``status_codes`` (`status_codes_attribute`) that spells the
vocabulary out, so a file explains itself; `read_status` maps a dataset back to today's codes,
including the files written before the vocabulary was shared.
"""
from __future__ import annotations

import enum
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:              # numpy is imported where used: the CLI parser imports this module
    import numpy as np

__all__ = [
    "FitStatus",
    "LATTICE_OUTCOMES",
    "PROFILE_OUTCOMES",
    "read_status",
    "status_codes_attribute",
]


class FitStatus(enum.Enum):
    """Outcome of one fit; ``status.value`` is a message for reports and files.

    Members, in the stable order of their integer `code` (new members are only appended):

    Pattern fits (one per frame): OK (0), NO_SIGNAL (1), NOT_CONVERGED (2), BAD_DATA (3),
    AT_BOUND (4), FAILED (5), MIXED (6).

    Peak fits of radial profiles and the lattice constant of a point: OK (0), NO_PEAK (7),
    PEAK_FIT_FAILED (8), NO_DATA (9), AMBIGUOUS (10), FROM_MODEL_FIT (11).

    MIXED: the fit converged, but SL peaks of a second orientation stand above the noise in
    what it leaves (two grains in the beam, the paper's grey points); the fitted values describe
    the stronger one. AMBIGUOUS: another fcc indexing explains the spots as well (e.g. 111 of
    a or 200 of 1.155 a) and nothing decides between them. FROM_MODEL_FIT: the spots alone gave
    no lattice constant and it was taken from the fit of the whole pattern.

    Examples
    --------
    >>> FitStatus.AT_BOUND.code
    4
    >>> FitStatus.from_code(1).value
    'no signal'
    >>> FitStatus.AMBIGUOUS.code
    10
    """

    OK = "ok"
    NO_SIGNAL = "no signal"
    NOT_CONVERGED = "did not converge within the iteration limit"
    BAD_DATA = "frame has non-finite or negative counts"
    AT_BOUND = "converged with a parameter at a bound"
    FAILED = "the fit raised an error"
    MIXED = "peaks of a second orientation remain after the fit (mixed pattern)"
    NO_PEAK = "no peak above the noise in the window"
    PEAK_FIT_FAILED = "the peak fit gave non-finite values or a singular covariance"
    NO_DATA = "too few finite bins in the window"
    AMBIGUOUS = "another indexing explains the spots as well (ambiguous)"
    FROM_MODEL_FIT = "lattice constant from the model fit of the whole pattern"

    @property
    def code(self) -> int:
        """Stable small integer for files (the position in the declaration order above)."""
        return _CODE[self]

    @classmethod
    def from_code(cls, code: int) -> FitStatus:
        """The status stored as ``code`` (see `code`).

        Raises
        ------
        ValueError
            If ``code`` is not one of the codes listed in the message.
        """
        try:
            i = int(code)
        except (TypeError, ValueError):
            i = -1
        if not 0 <= i < len(_ORDER):
            valid = ", ".join(f"{s.code} ({s.name})" for s in _ORDER)
            raise ValueError(f"unknown fit status code {code!r}; valid codes are {valid}. "
                             "Was the file written by a newer xmodel?")
        return _ORDER[i]

    @property
    def success(self) -> bool:
        """True for OK and AT_BOUND (a usable pattern fit)."""
        return self in (FitStatus.OK, FitStatus.AT_BOUND)


_ORDER = tuple(FitStatus)
_CODE = {s: i for i, s in enumerate(_ORDER)}

#: outcomes of a Gaussian peak fit of one radial profile (`fits.analyses.peak_profile`)
PROFILE_OUTCOMES = (FitStatus.OK, FitStatus.NO_PEAK, FitStatus.PEAK_FIT_FAILED, FitStatus.NO_DATA)
#: outcomes of the lattice constant of one scan point (`fits.analyses.shell_comb`, `qmap`)
LATTICE_OUTCOMES = PROFILE_OUTCOMES + (FitStatus.AMBIGUOUS, FitStatus.FROM_MODEL_FIT)

#: the per-profile vocabulary files held before it was shared (group attribute
#: ``status_names``, entries "code: name"): name -> today's status
_LEGACY_NAMES = {"ok": FitStatus.OK, "no peak": FitStatus.NO_PEAK, "fit failed": FitStatus.PEAK_FIT_FAILED,
                 "no data": FitStatus.NO_DATA, "ambiguous": FitStatus.AMBIGUOUS,
                 "from the model fit": FitStatus.FROM_MODEL_FIT}
_ENTRY = re.compile(r"^\s*(-?\d+)\s*:\s*(.*?)\s*$")


def status_codes_attribute() -> list[str]:
    """The ``status_codes`` attribute of a status dataset: one ``"code NAME: message"`` per member.

    Examples
    --------
    >>> status_codes_attribute()[7]
    '7 NO_PEAK: no peak above the noise in the window'
    """
    return [f"{s.code} {s.name}: {s.value}" for s in _ORDER]


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _translation(entries, where: str, legacy: bool) -> dict[int, int]:
    """file code -> today's code from the entries of a ``status_codes`` (or legacy) attribute."""
    import numpy as np
    table = {}
    for raw in np.atleast_1d(entries):
        entry = _text(raw)
        m = _ENTRY.match(entry) if legacy else re.match(r"^\s*(-?\d+)\s+(\w+)\s*:", entry)
        status = None
        if m is not None:
            status = _LEGACY_NAMES.get(m.group(2)) if legacy else FitStatus.__members__.get(m.group(2))
        if status is None:
            valid = ", ".join(s.name for s in _ORDER)
            raise ValueError(f"{where}: status entry {entry!r} names no known outcome; known are {valid}. "
                             "Was the file written by a newer xmodel?")
        table[int(m.group(1))] = status.code
    return table


def read_status(dataset) -> np.ndarray:
    """The codes of a status dataset of an HDF5 file, in today's `FitStatus` codes.

    Parameters
    ----------
    dataset : h5py.Dataset
        A ``status`` dataset: with the attribute ``status_codes`` (`status_codes_attribute`);
        or from older files, with the group attribute ``status_names`` (``"0: ok"``, ``"1: no
        peak"``, ... of ``/entry/qmap/<family>``); or without either, then holding `FitStatus`
        codes as the scan fit has always written them.

    Returns
    -------
    numpy.ndarray of int8
        `FitStatus` codes, the dataset's shape.

    Raises
    ------
    ValueError
        If an entry of the file's vocabulary names no known outcome, or the dataset holds a code
        its vocabulary does not list.
    """
    import numpy as np
    where = f"{dataset.file.filename}:{dataset.name}"
    raw = np.asarray(dataset[()])
    if "status_codes" in dataset.attrs:
        table = _translation(dataset.attrs["status_codes"], where, legacy=False)
    elif "status_names" in dataset.parent.attrs:
        table = _translation(dataset.parent.attrs["status_names"], where, legacy=True)
    else:
        table = {s.code: s.code for s in _ORDER}
    codes = np.array(sorted(table), dtype=np.int64)
    known = np.isin(raw, codes)
    if not np.all(known):
        bad = sorted({int(x) for x in np.unique(raw[~known])})
        raise ValueError(f"{where} holds status codes {bad} that its vocabulary does not list "
                         f"(known: {codes.tolist()}); the file is damaged or from a newer xmodel.")
    lut = np.zeros(int(codes.max()) - int(codes.min()) + 1, np.int8)
    lut[codes - codes.min()] = [table[int(c)] for c in codes]
    return lut[raw.astype(np.int64) - codes.min()]
