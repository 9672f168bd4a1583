"""Outcome of a fit, one value per pattern (optimistix-style: the values are human messages).

A scan fit records one `FitStatus` per frame instead of raising, so that one bad frame never
stops a scan; `FitStatus.code` is a small stable integer for HDF5 results files and
`FitStatus.from_code` reads it back.
"""
from __future__ import annotations

import enum


class FitStatus(enum.Enum):
    """Outcome of fitting one pattern; ``status.value`` is a message for reports and files.

    Members, in the stable order of their integer `code`:

    OK (0), NO_SIGNAL (1), NOT_CONVERGED (2), BAD_DATA (3), AT_BOUND (4), FAILED (5), MIXED (6).

    MIXED: the fit converged, but SL peaks of a second orientation stand above the noise in
    what it leaves (two grains in the beam, the paper's grey points); the fitted values describe
    the stronger one.

    Examples
    --------
    >>> FitStatus.AT_BOUND.code
    4
    >>> FitStatus.from_code(1).value
    'no signal'
    """

    OK = "ok"
    NO_SIGNAL = "no signal"
    NOT_CONVERGED = "did not converge within the iteration limit"
    BAD_DATA = "frame has non-finite or negative counts"
    AT_BOUND = "converged with a parameter at a bound"
    FAILED = "the fit raised an error"
    MIXED = "peaks of a second orientation remain after the fit (mixed pattern)"

    @property
    def code(self) -> int:
        """Stable small integer for files (the position in the declaration order above)."""
        return _ORDER.index(self)

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
        """True for OK and AT_BOUND (a usable fit)."""
        return self in (FitStatus.OK, FitStatus.AT_BOUND)


_ORDER = tuple(FitStatus)
