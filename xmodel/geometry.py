"""Detector geometry in pyFAI's PONI convention: pixel positions, q on the Ewald sphere,
chi, solid angle and polarization (numpy float64, precomputed outside JAX).

Contract
--------
* Lab frame (docs/conventions.md): axis 1 along the detector rows (dim1, "vertical"),
  axis 2 along the columns (dim2, "horizontal"), axis 3 along the incident beam;
  ``k_i = k e3`` with ``k = 2 pi / lambda`` in 1/A.
* PONI parameters exactly as pyFAI: ``dist`` (sample -> point of normal incidence, m),
  ``poni1``/``poni2`` (m, from the detector's pixel-corner origin), ``rot1..3`` (rad).
  A pixel's position relative to the sample is ``t = R (p1 - poni1, p2 - poni2, dist)``
  with ``R = R3(rot3) R2(rot2) R1(rot1)`` (pyFAI ``Geometry.rotation_matrix``) and
  ``p = (index + 0.5) * pixel``.
* Pixel-index coordinates: the centre of pixel ``(i, j)`` is at ``(i, j)``.
* Detectors are flat, orientation 3 (pyFAI's default), no spline distortion, no parallax.

Reading and writing ``.poni`` files is done by the private functions at the bottom of this
module (plain text in, plain dict out), kept apart from the physics.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import constants

from xmodel.detector import get_detector_spec

#: h c in keV * Angstrom (CODATA via scipy.constants).
HC_KEV_A: float = constants.h * constants.c / (constants.e * 1e3) * 1e10


def _rotation_matrix(rot1: float, rot2: float, rot3: float) -> np.ndarray:
    """pyFAI's detector rotation ``R = R3 R2 R1`` (R1, R2 left-handed, R3 right-handed)."""
    c1, s1 = np.cos(rot1), np.sin(rot1)
    c2, s2 = np.cos(rot2), np.sin(rot2)
    c3, s3 = np.cos(rot3), np.sin(rot3)
    r1 = np.array([[1.0, 0.0, 0.0], [0.0, c1, s1], [0.0, -s1, c1]])
    r2 = np.array([[c2, 0.0, -s2], [0.0, 1.0, 0.0], [s2, 0.0, c2]])
    r3 = np.array([[c3, -s3, 0.0], [s3, c3, 0.0], [0.0, 0.0, 1.0]])
    return r3 @ r2 @ r1


def _positive(name: str, value: float, unit: str) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"Geometry {name}={value!r} must be a finite positive number ({unit}).")
    return value


@dataclass(frozen=True)
class Geometry:
    """A flat detector placed in pyFAI's PONI geometry.

    Attributes
    ----------
    dist : float
        Sample -> PONI distance along the detector normal (m).
    poni1, poni2 : float
        Point of normal incidence on the detector, along dim1 (rows) and dim2 (cols), from
        the detector's pixel-corner origin (m).
    rot1, rot2, rot3 : float
        pyFAI detector rotations (rad).
    wavelength : float
        X-ray wavelength (m).
    pixel1, pixel2 : float
        Pixel size along rows and columns (m).
    shape : tuple[int, int]
        ``(rows, cols)``.
    detector_name : str
        ``"Eiger4M"`` (or another name known to :mod:`xmodel.detector`), or ``""`` for a
        generic detector.

    Notes
    -----
    Geometry of Kieffer & Karkoulis 2013 (doi:10.1088/1742-6596/425/20/202012) and
    Ashiotis et al. 2015 (doi:10.1107/S1600576715004306); the Ewald-sphere q follows
    docs/conventions.md (no flat-Ewald shortcut).

    Validation: q, chi, solid angle and polarization agree with pyFAI's
    ``AzimuthalIntegrator`` for tilted Eiger 4M geometries (tests/xmodel/test_geometry.py).
    """

    dist: float
    poni1: float
    poni2: float
    rot1: float
    rot2: float
    rot3: float
    wavelength: float
    pixel1: float
    pixel2: float
    shape: tuple[int, int]
    detector_name: str = "Eiger4M"

    def __post_init__(self) -> None:
        _positive("dist", self.dist, "metres, sample to PONI")
        _positive("wavelength", self.wavelength, "metres, e.g. 8.98e-11 for 13.8 keV")
        _positive("pixel1", self.pixel1, "metres, e.g. 75e-6")
        _positive("pixel2", self.pixel2, "metres, e.g. 75e-6")
        for name in ("poni1", "poni2", "rot1", "rot2", "rot3"):
            value = getattr(self, name)
            if not np.isfinite(float(value)):
                raise ValueError(f"Geometry {name}={value!r} must be a finite number.")
        try:
            rows, cols = (int(n) for n in self.shape)
        except (TypeError, ValueError):
            rows = cols = 0
        if rows <= 0 or cols <= 0 or len(tuple(self.shape)) != 2:
            raise ValueError(
                f"Geometry shape={self.shape!r} must be a pair of positive integers (rows, cols), "
                "e.g. (2167, 2070) for an Eiger 4M."
            )
        object.__setattr__(self, "shape", (rows, cols))
        for name in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength", "pixel1", "pixel2"):
            object.__setattr__(self, name, float(getattr(self, name)))

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_poni(cls, path: str | Path, detector: str | None = None) -> "Geometry":
        """Read a pyFAI ``.poni`` file (versions 1, 2, 2.1; 3 without parallax).

        Parameters
        ----------
        path : str or Path
            The ``.poni`` file.
        detector : str, optional
            Detector name to use instead of (or in the absence of) the file's ``Detector``
            key, e.g. ``"Eiger4M"`` for a version-1 file without shape.

        Returns
        -------
        Geometry
            Pixel sizes from the file's ``Detector_config`` (or ``PixelSize1/2``), shape
            from the detector table divided by the binning (pixel / native pixel), or from
            ``max_shape`` for a generic ``Detector``.

        Notes
        -----
        Format: pyFAI ``pyFAI/io/ponifile.py`` (Ashiotis et al. 2015,
        doi:10.1107/S1600576715004306).

        Validation: reads files written by ``pyFAI.AzimuthalIntegrator.save`` to the same
        parameters and shape (tests/xmodel/test_geometry.py).
        """
        return cls(**_read_poni(Path(path), detector))

    def to_poni(self, path: str | Path) -> None:
        """Write a version-2.1 ``.poni`` file that ``pyFAI.load`` reads back to this geometry.

        Parameters
        ----------
        path : str or Path
            Output file (overwritten).

        Notes
        -----
        A known detector whose shape is its full shape divided by an integer binning is
        written under its name with the binned pixel sizes (pyFAI derives the binning
        from the pixel size); any other geometry as a generic ``Detector`` with
        ``max_shape``. Floats are written with ``repr`` so they round-trip exactly.

        Validation: ``pyFAI.load`` of the file gives the same parameters, detector shape
        and pixel sizes (tests/xmodel/test_geometry.py).
        """
        Path(path).write_text(_poni_text(self))

    @classmethod
    def from_beam_center(
        cls,
        distance_m: float,
        beam_center_px: tuple[float, float],
        energy_kev: float,
        detector: str = "Eiger4M",
        rot1: float = 0.0,
        rot2: float = 0.0,
        rot3: float = 0.0,
    ) -> "Geometry":
        """Geometry from the direct-beam position on the detector.

        Parameters
        ----------
        distance_m : float
            pyFAI ``dist``: sample -> detector plane along its normal (m). Equal to the
            sample -> beam-centre distance for an untilted detector.
        beam_center_px : tuple[float, float]
            ``(row, col)`` where the direct beam hits the detector, in pixel-index
            coordinates (centre of pixel ``(i, j)`` at ``(i, j)``).
        energy_kev : float
            Photon energy (keV).
        detector : str
            Known detector name (shape and pixel sizes from :mod:`xmodel.detector`).
        rot1, rot2, rot3 : float
            pyFAI rotations (rad).

        Returns
        -------
        Geometry
            With ``poni = (beam_center + 0.5) * pixel - dist * (u1, u2) / u3``,
            ``u = R^T e3`` the beam direction in the detector frame; for zero rotations
            ``poni1 = (row + 0.5) * pixel1``.

        Notes
        -----
        Ray-plane intersection of the direct beam with the tilted detector plane
        (Kieffer & Karkoulis 2013, doi:10.1088/1742-6596/425/20/202012).

        Validation: :meth:`pixel_from_q_lab` of q = 0 returns ``beam_center_px``
        (tests/xmodel/test_geometry.py).
        """
        spec = get_detector_spec(detector)
        energy = _positive("energy_kev", energy_kev, "keV, e.g. 13.8")
        dist = _positive("distance_m", distance_m, "metres, sample to detector")
        u = _rotation_matrix(rot1, rot2, rot3).T @ np.array([0.0, 0.0, 1.0])
        if u[2] <= 0:
            raise ValueError(
                f"Rotations rot1={rot1!r}, rot2={rot2!r}, rot3={rot3!r} turn the detector away "
                "from the direct beam, so the beam centre is undefined; use |rot1|, |rot2| < pi/2."
            )
        row, col = (float(c) for c in beam_center_px)
        pixel1, pixel2 = spec.pixel
        return cls(
            dist=dist,
            poni1=(row + 0.5) * pixel1 - dist * u[0] / u[2],
            poni2=(col + 0.5) * pixel2 - dist * u[1] / u[2],
            rot1=rot1,
            rot2=rot2,
            rot3=rot3,
            wavelength=HC_KEV_A / energy * 1e-10,
            pixel1=pixel1,
            pixel2=pixel2,
            shape=spec.shape,
            detector_name=spec.name,
        )

    # ----------------------------------------------------------------- scalars
    @property
    def wavelength_A(self) -> float:
        """Wavelength in Angstrom."""
        return self.wavelength * 1e10

    @property
    def k(self) -> float:
        """Wave number ``2 pi / lambda`` in 1/A."""
        return 2.0 * np.pi / self.wavelength_A

    @property
    def energy_kev(self) -> float:
        """Photon energy ``h c / lambda`` in keV.

        Notes
        -----
        ``h c = 12.3984 keV A`` from CODATA (``scipy.constants``).

        Validation: 13.8 keV gives the paper's 0.898 A (tests/xmodel/test_geometry.py).
        """
        return HC_KEV_A / self.wavelength_A

    @property
    def rotation_matrix(self) -> np.ndarray:
        """pyFAI's ``R = R3(rot3) R2(rot2) R1(rot1)``: detector frame -> lab frame (3x3)."""
        return _rotation_matrix(self.rot1, self.rot2, self.rot3)

    def binned(self, factor: int) -> "Geometry":
        """The same detector read out in ``factor x factor`` bins.

        Parameters
        ----------
        factor : int
            Binning (positive integer); shape is ``shape // factor`` (cropped, as pyFAI).

        Returns
        -------
        Geometry
            Pixel sizes times ``factor``, same PONI, rotations and wavelength.

        Notes
        -----
        pyFAI ``Detector.binning`` (Ashiotis et al. 2015, doi:10.1107/S1600576715004306).

        Validation: q and chi equal pyFAI's with a binned Eiger 4M
        (tests/xmodel/test_geometry.py).
        """
        if isinstance(factor, bool) or int(factor) != factor or factor < 1:
            raise ValueError(f"Binning factor {factor!r} must be a positive integer (1, 2, 4, ...).")
        factor = int(factor)
        shape = (self.shape[0] // factor, self.shape[1] // factor)
        if 0 in shape:
            raise ValueError(f"Binning factor {factor} is larger than the detector shape {self.shape}.")
        return replace(self, pixel1=self.pixel1 * factor, pixel2=self.pixel2 * factor, shape=shape)

    # ----------------------------------------------------------------- per pixel
    def _index_grid(self, rows, cols) -> tuple[np.ndarray, np.ndarray]:
        if rows is None and cols is None:
            return (
                np.arange(self.shape[0], dtype=np.float64)[:, None],
                np.arange(self.shape[1], dtype=np.float64)[None, :],
            )
        if rows is None or cols is None:
            raise ValueError("Give both rows and cols (pixel-index arrays), or neither for the full detector.")
        return np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64)

    def _components(self, rows=None, cols=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lab-frame pixel position components (t1, t2, t3) in m, broadcast to one shape."""
        rows, cols = self._index_grid(rows, cols)
        p1 = (rows + 0.5) * self.pixel1 - self.poni1
        p2 = (cols + 0.5) * self.pixel2 - self.poni2
        rot = self.rotation_matrix
        shape = np.broadcast_shapes(p1.shape, p2.shape)
        return tuple(
            np.broadcast_to(rot[a, 0] * p1 + rot[a, 1] * p2 + rot[a, 2] * self.dist, shape)
            for a in range(3)
        )

    def positions(self, rows=None, cols=None) -> np.ndarray:
        """Pixel-centre positions relative to the sample in the lab frame.

        Parameters
        ----------
        rows, cols : array_like, optional
            Pixel-index coordinates (fractional allowed, broadcast together); default the
            full detector grid.

        Returns
        -------
        numpy.ndarray
            ``(..., 3)`` float64, ``(t1, t2, t3)`` in metres.

        Notes
        -----
        ``t = R (p1 - poni1, p2 - poni2, dist)``, ``p = (index + 0.5) pixel``: pyFAI
        ``Geometry.calc_pos_zyx`` reordered from ``(t3, t1, t2)`` (Kieffer & Karkoulis
        2013, doi:10.1088/1742-6596/425/20/202012).

        Validation: equal to pyFAI's ``position_array`` (tests/xmodel/test_geometry.py).
        """
        return np.stack(self._components(rows, cols), axis=-1)

    def q_lab(self, rows=None, cols=None) -> np.ndarray:
        """Scattering vectors ``q = k_f - k_i`` of pixel centres on the Ewald sphere.

        Parameters
        ----------
        rows, cols : array_like, optional
            Pixel-index coordinates (fractional allowed); default the full detector.

        Returns
        -------
        numpy.ndarray
            ``(..., 3)`` float64 in 1/A, lab frame (axis 1, axis 2, axis 3).

        Notes
        -----
        ``k_f = k t / |t|``, ``k_i = k e3`` (docs/conventions.md). The third component is
        written ``-k (t1^2 + t2^2) / (|t| (|t| + t3))`` to avoid cancellation at small
        angles.

        Validation: ``|q_lab|`` equals pyFAI's ``q_A^-1`` and :meth:`pixel_from_q_lab`
        inverts it (tests/xmodel/test_geometry.py).
        """
        t1, t2, t3 = self._components(rows, cols)
        r2 = t1 * t1 + t2 * t2
        norm = np.sqrt(r2 + t3 * t3)
        k = self.k
        return np.stack((k * t1 / norm, k * t2 / norm, -k * r2 / (norm * (norm + t3))), axis=-1)

    def two_theta(self) -> np.ndarray:
        """Scattering angle ``2 theta = arctan2(sqrt(t1^2 + t2^2), t3)`` (rad), shape ``self.shape``.

        Notes
        -----
        pyFAI ``Geometry.tth`` (Kieffer & Karkoulis 2013, doi:10.1088/1742-6596/425/20/202012).

        Validation: via :meth:`q` against pyFAI (tests/xmodel/test_geometry.py).
        """
        t1, t2, t3 = self._components()
        return np.arctan2(np.sqrt(t1 * t1 + t2 * t2), t3)

    def q(self) -> np.ndarray:
        """``|q| = 4 pi sin(theta) / lambda`` (1/A), shape ``self.shape``.

        Notes
        -----
        Bragg's law in q (docs/conventions.md); pyFAI unit ``q_A^-1``.

        Validation: pyFAI ``center_array(unit="q_A^-1")`` to 1e-6 relative
        (tests/xmodel/test_geometry.py).
        """
        return 2.0 * self.k * np.sin(0.5 * self.two_theta())

    def _chi_rad(self) -> np.ndarray:
        t1, t2, _ = self._components()
        return np.arctan2(t1, t2)

    def chi(self) -> np.ndarray:
        """Azimuth ``chi = arctan2(t1, t2)`` in degrees, (-180, 180], shape ``self.shape``.

        Notes
        -----
        pyFAI's chi with the discontinuity at pi (Kieffer & Karkoulis 2013,
        doi:10.1088/1742-6596/425/20/202012).

        Validation: pyFAI ``center_array(unit="chi_deg")`` to 1e-4 degree
        (tests/xmodel/test_geometry.py).
        """
        return np.rad2deg(self._chi_rad())

    def solid_angle(self) -> np.ndarray:
        """Relative pixel solid angle ``cos^3(incidence)``, 1 at the PONI, shape ``self.shape``.

        Notes
        -----
        ``cos(incidence) = dist / sqrt(dist^2 + (p1 - poni1)^2 + (p2 - poni2)^2)``; the
        absolute solid angle is ``pixel1 pixel2 / dist^2`` times this (pyFAI
        ``solidAngleArray``, Ashiotis et al. 2015, doi:10.1107/S1600576715004306).

        Validation: pyFAI ``solidAngleArray`` (tests/xmodel/test_geometry.py).
        """
        p1 = (np.arange(self.shape[0], dtype=np.float64)[:, None] + 0.5) * self.pixel1 - self.poni1
        p2 = (np.arange(self.shape[1], dtype=np.float64)[None, :] + 0.5) * self.pixel2 - self.poni2
        cos_incidence = self.dist / np.sqrt(self.dist**2 + p1 * p1 + p2 * p2)
        return cos_incidence**3

    def polarization(self, factor: float, axis_offset: float = 0.0) -> np.ndarray:
        """Polarization factor of every pixel (multiply a model by it; divide data by it).

        Parameters
        ----------
        factor : float
            ``(I_h - I_v) / (I_h + I_v)`` in [-1, 1]: 1 = linear horizontal (along axis 2,
            synchrotron), 0 = unpolarized, -1 = linear vertical.
        axis_offset : float
            Angle between the polarization plane and the detector's axis 2 (rad).

        Returns
        -------
        numpy.ndarray
            float64, shape ``self.shape``.

        Notes
        -----
        ``P = (1 + cos^2 2theta - f cos(2 (chi + offset)) sin^2 2theta) / 2`` (pyFAI
        ``Geometry.polarization``; Kahn et al. 1982, doi:10.1107/S0021889882012035).

        Validation: pyFAI ``ai.polarization(factor=..., axis_offset=...)``
        (tests/xmodel/test_geometry.py).
        """
        factor = float(factor)
        if not -1.0 <= factor <= 1.0:
            raise ValueError(
                f"Polarization factor={factor!r} must lie in [-1, 1] (1: horizontal linear "
                "polarization, typical synchrotron value 0.95-0.99)."
            )
        t1, t2, t3 = self._components()
        r2 = t1 * t1 + t2 * t2
        cos2_tth = t3 * t3 / (r2 + t3 * t3)
        chi = np.arctan2(t1, t2)
        return 0.5 * (1.0 + cos2_tth - factor * np.cos(2.0 * (chi + axis_offset)) * (1.0 - cos2_tth))

    # ----------------------------------------------------------------- inverse maps
    def q_lab_from_polar(self, q, chi_deg) -> np.ndarray:
        """Points on the Ewald sphere with given ``|q|`` and pyFAI azimuth.

        Parameters
        ----------
        q : array_like
            ``|q|`` in 1/A, ``0 <= q <= 2 k``.
        chi_deg : array_like
            pyFAI chi in degrees (broadcast with ``q``).

        Returns
        -------
        numpy.ndarray
            ``(..., 3)`` q vectors in 1/A, lab frame.

        Notes
        -----
        ``2 theta = 2 arcsin(q / 2k)``, ``k_f = k (sin 2theta sin chi, sin 2theta cos chi,
        cos 2theta)``, ``q = k_f - k e3`` (docs/conventions.md).

        Validation: round trip with :meth:`q_lab`, :meth:`q` and :meth:`chi`
        (tests/xmodel/test_geometry.py).
        """
        q = np.asarray(q, dtype=np.float64)
        chi = np.deg2rad(np.asarray(chi_deg, dtype=np.float64))
        k = self.k
        if np.any(q < 0) or np.any(q > 2.0 * k) or not np.all(np.isfinite(q)):
            bad = float(q[(q < 0) | (q > 2.0 * k) | ~np.isfinite(q)].ravel()[0])
            raise ValueError(
                f"q={bad!r} 1/A is not on the Ewald sphere: valid is 0 <= q <= 2k = {2 * k:.6g} 1/A "
                f"at wavelength {self.wavelength_A:.6g} A."
            )
        sin_theta = q / (2.0 * k)
        sin_tth = 2.0 * sin_theta * np.sqrt(1.0 - sin_theta**2)
        return np.stack(
            (k * sin_tth * np.sin(chi), k * sin_tth * np.cos(chi), -2.0 * k * sin_theta**2),
            axis=-1,
        )

    def pixel_from_q_lab(self, q_lab) -> tuple[np.ndarray, np.ndarray]:
        """Where the ray ``k_f = q_lab + k_i`` hits the detector plane.

        Parameters
        ----------
        q_lab : array_like
            ``(..., 3)`` in 1/A, lab frame; need not lie exactly on the Ewald sphere (only
            the direction of ``k_f`` is used).

        Returns
        -------
        row, col : numpy.ndarray
            Fractional pixel-index coordinates (centre of pixel ``(i, j)`` at ``(i, j)``),
            shape ``q_lab.shape[:-1]``; NaN where ``k_f`` points away from the detector
            plane. Points outside the detector area are returned unclipped.

        Notes
        -----
        With ``u = R^T k_f`` (detector frame): ``p1 = poni1 + dist u1 / u3``,
        ``p2 = poni2 + dist u2 / u3``, index ``= p / pixel - 0.5`` (the inverse of
        :meth:`positions`).

        Validation: inverts :meth:`q_lab` on a tilted geometry to 1e-6 pixel
        (tests/xmodel/test_geometry.py).
        """
        q_lab = np.asarray(q_lab, dtype=np.float64)
        if q_lab.shape[-1:] != (3,):
            raise ValueError(f"q_lab must have shape (..., 3) (axis 1, axis 2, axis 3); got {q_lab.shape}.")
        k_f = q_lab + np.array([0.0, 0.0, self.k])
        u = k_f @ self.rotation_matrix  # = (R^T k_f) for row vectors
        hits = u[..., 2] > 0
        u3 = np.where(hits, u[..., 2], 1.0)
        row = (self.poni1 + self.dist * u[..., 0] / u3) / self.pixel1 - 0.5
        col = (self.poni2 + self.dist * u[..., 1] / u3) / self.pixel2 - 0.5
        return np.where(hits, row, np.nan), np.where(hits, col, np.nan)


# --------------------------------------------------------------------- .poni file I/O
_PONI_FLOAT_KEYS = {
    "poni1": "Poni1",
    "poni2": "Poni2",
    "rot1": "Rot1",
    "rot2": "Rot2",
    "rot3": "Rot3",
    "wavelength": "Wavelength",
}
_GENERIC_DETECTOR_NAMES = ("", "detector", "none")


def _poni_entries(path: Path) -> dict[str, str]:
    """``key: value`` lines of a .poni file, keys lower-cased, comments skipped, last wins (pyFAI)."""
    if not path.is_file():
        raise FileNotFoundError(f"PONI file {str(path)!r} does not exist; check the path.")
    entries: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        entries[key.strip().lower()] = value.strip()
    return entries


def _poni_float(path: Path, entries: dict[str, str], key: str, label: str, example: str) -> float:
    if key not in entries:
        raise ValueError(
            f"PONI file {str(path)!r} has no {label!r} key; add a line '{label}: {example}' "
            "or re-save the calibration with pyFAI."
        )
    try:
        return float(entries[key])
    except ValueError:
        raise ValueError(
            f"PONI file {str(path)!r}: key {label!r} has the value {entries[key]!r}, which is not "
            f"a number; write it like '{label}: {example}'."
        ) from None


def _read_poni(path: Path, detector: str | None) -> dict:
    """Geometry keyword arguments from a pyFAI .poni file (see :meth:`Geometry.from_poni`)."""
    entries = _poni_entries(path)
    examples = {"poni1": "0.08", "poni2": "0.08", "rot1": "0.0", "rot2": "0.0", "rot3": "0.0",
                "wavelength": "8.98e-11"}
    dist_key = "dist" if "dist" in entries and "distance" not in entries else "distance"
    dist = _poni_float(path, entries, dist_key, "Distance", "0.41")
    values = {key: _poni_float(path, entries, key, label, examples[key]) for key, label in _PONI_FLOAT_KEYS.items()}

    if entries.get("parallax", "false").strip().lower() == "true":
        raise ValueError(
            f"PONI file {str(path)!r} asks for the parallax correction ('Parallax: True'), which "
            "xmodel does not model; recalibrate without parallax or set 'Parallax: False'."
        )
    config: dict = {}
    if "detector_config" in entries:
        try:
            config = json.loads(entries["detector_config"])
        except json.JSONDecodeError as error:
            raise ValueError(
                f"PONI file {str(path)!r}: key 'Detector_config' is not valid JSON ({error}); "
                f"got {entries['detector_config']!r}. Expected e.g. "
                '{"pixel1": 7.5e-05, "pixel2": 7.5e-05, "orientation": 3}.'
            ) from None
        if not isinstance(config, dict):
            raise ValueError(
                f"PONI file {str(path)!r}: key 'Detector_config' must be a JSON object, got "
                f"{entries['detector_config']!r}."
            )
    orientation = config.get("orientation", 3)
    if orientation not in (0, 3):
        raise ValueError(
            f"PONI file {str(path)!r}: Detector_config orientation={orientation!r} is not supported; "
            "xmodel handles orientation 3 (pyFAI's default, pixel (0, 0) at the origin) only. "
            "Flip the images and recalibrate with orientation 3."
        )
    spline = config.get("splineFile") or config.get("splinefile") or entries.get("splinefile")
    if spline and str(spline).lower() != "none":
        raise ValueError(
            f"PONI file {str(path)!r} uses the distortion spline {spline!r}; xmodel supports flat, "
            "undistorted detectors only."
        )

    pixel1 = config.get("pixel1", entries.get("pixelsize1"))
    pixel2 = config.get("pixel2", entries.get("pixelsize2"))
    name = detector if detector is not None else entries.get("detector", "Detector")
    if name.strip().lower() in _GENERIC_DETECTOR_NAMES:
        missing = [key for key, value in (("pixel1", pixel1), ("pixel2", pixel2),
                                          ("max_shape", config.get("max_shape"))) if value is None]
        if missing:
            raise ValueError(
                f"PONI file {str(path)!r} describes a generic 'Detector' without "
                f"{', '.join(missing)} in 'Detector_config'; add them (e.g. "
                '{"pixel1": 7.5e-05, "pixel2": 7.5e-05, "max_shape": [2167, 2070]}) '
                "or pass detector='Eiger4M' to Geometry.from_poni."
            )
        shape = tuple(int(n) for n in config["max_shape"])
        return dict(dist=dist, **values, pixel1=float(pixel1), pixel2=float(pixel2), shape=shape,
                    detector_name="")
    try:
        spec = get_detector_spec(name)
    except ValueError as error:
        raise ValueError(
            f"PONI file {str(path)!r}: key 'Detector' names an unknown detector. {error} "
            "Or pass detector= to Geometry.from_poni."
        ) from None
    pixel = (float(pixel1) if pixel1 is not None else spec.pixel[0],
             float(pixel2) if pixel2 is not None else spec.pixel[1])
    max_shape = tuple(int(n) for n in config.get("max_shape", spec.shape))
    binning = [p / native for p, native in zip(pixel, spec.pixel)]
    if any(b < 0.5 or abs(b - round(b)) > 1e-6 * b for b in binning):
        raise ValueError(
            f"PONI file {str(path)!r}: pixel sizes {pixel} m are not integer multiples (binnings) of "
            f"the {spec.name} pixel {spec.pixel} m; fix 'Detector_config' or use a generic 'Detector'."
        )
    shape = (max_shape[0] // round(binning[0]), max_shape[1] // round(binning[1]))
    return dict(dist=dist, **values, pixel1=pixel[0], pixel2=pixel[1], shape=shape,
                detector_name=spec.name)


def _poni_text(geometry: Geometry) -> str:
    """pyFAI .poni text (version 2.1) of a geometry (see :meth:`Geometry.to_poni`)."""
    name, config = "Detector", {"pixel1": geometry.pixel1, "pixel2": geometry.pixel2, "orientation": 3,
                                "max_shape": list(geometry.shape)}
    if geometry.detector_name:
        spec = get_detector_spec(geometry.detector_name)
        binning = [p / native for p, native in zip((geometry.pixel1, geometry.pixel2), spec.pixel)]
        if all(abs(b - round(b)) <= 1e-9 * b and round(b) >= 1 for b in binning) and geometry.shape == (
            spec.shape[0] // round(binning[0]),
            spec.shape[1] // round(binning[1]),
        ):
            name = spec.name
            config = {"pixel1": geometry.pixel1, "pixel2": geometry.pixel2, "orientation": 3}
    lines = [
        "# Nota: C-Order, 1 refers to the Y axis, 2 to the X axis",
        "# Written by xmodel.geometry.Geometry.to_poni",
        "poni_version: 2.1",
        f"Detector: {name}",
        f"Detector_config: {json.dumps(config)}",
        f"Distance: {geometry.dist!r}",
        f"Poni1: {geometry.poni1!r}",
        f"Poni2: {geometry.poni2!r}",
        f"Rot1: {geometry.rot1!r}",
        f"Rot2: {geometry.rot2!r}",
        f"Rot3: {geometry.rot3!r}",
        f"Wavelength: {geometry.wavelength!r}",
        "",
    ]
    return "\n".join(lines)
