"""Nanocrystal orientational disorder from the widths of the 200_AL peak (Eq. 7, Table S2).

Contract
--------
* `orientational_disorder` is Eq. 7 with error propagation, on FWHMs in degrees.
* `fit_al_peak` fits a 2D Gaussian (in |q| and chi) plus a constant to one AL peak of a
  (domain-averaged) polar image and returns its radial and azimuthal FWHMs in degrees.
* `domain_disorder` averages the polar images of a reduced scan (optionally of one domain)
  and chains the two.

Units: q in 1/A, chi and all FWHMs in degrees (report edge), wavelength in Angstrom.

The radial FWHM "in degrees" is the angular equivalent of the radial width,
``FWHM_rad_deg = degrees(FWHM_q / |G|)`` (docs/conventions.md), so both widths of Eq. 7 are
angles subtended at the origin of reciprocal space.

Ewald-sphere cut
----------------
The polar grid's chi is the azimuth about the beam, on the Ewald sphere. At ``|q|`` the
ring of constant ``|q|`` is a circle of radius ``|q| cos(theta)`` about the beam axis
(``sin(theta) = |q| lambda / 4 pi``), and moving along chi is a purely tangential move in
reciprocal space. A tangential FWHM ``w`` (1/A) therefore spans ``w / (|q| cos theta)`` rad
of chi: the chi width overstates the angular width by ``1 / cos theta`` (1.2 % for PbS 200
at 13.8 keV, theta = 8.7 deg). Because the model peak is a Gaussian that is separable in
its radial and two tangential axes, the sphere passing off the peak centre (Bragg condition
not met exactly) changes the intensity, not the chi width. Along |q| at fixed chi the path
on the sphere makes the angle theta with q, so the measured radial sigma is
``(1/sigma_r^2 + tan^2(theta)/sigma_t^2)^(-1/2)``, below 0.1 % for the paper's widths.
`fit_al_peak` reports the raw chi FWHM and `domain_disorder` applies the ``cos theta``
correction when a wavelength is given (``ewald_correction=True``).
"""
from __future__ import annotations

import dataclasses
import json

from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from fits.analyses.arguments import finite_number, interval

__all__ = [
    "DisorderResult",
    "PeakWidths",
    "orientational_disorder",
    "fit_al_peak",
    "class_names",
    "domain_frames",
    "average_polar",
    "domain_disorder",
    "Q_AL_200",
]

#: PbS 200_AL position (1/A) for a = 5.936 A: 2 pi * 2 / 5.936.
Q_AL_200 = 4.0 * np.pi / 5.936

_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class DisorderResult:
    """Eq. 7 result: FWHMs and dPhi in degrees, each with its one-sigma error.

    ``resolved`` is False when dPhi^2 lies within one sigma of 0 (the two widths agree within
    their errors): dPhi is then not distinguished from 0 and ``dphi_deg + dphi_err_deg`` is best
    read as a one-sigma upper limit.
    """

    fwhm_az_deg: float
    fwhm_az_err_deg: float
    fwhm_rad_deg: float
    fwhm_rad_err_deg: float
    dphi_deg: float
    dphi_err_deg: float
    resolved: bool = True

    def as_dict(self) -> dict:
        """Plain dict (JSON-ready)."""
        return asdict(self)


#: largest accepted FWHM or error (deg): a Gaussian whose FWHM spans half the circle is no peak
MAX_FWHM_DEG = 180.0


def _finite_nonnegative(value, name: str, hint: str, option: str = "") -> float:
    """``value`` as a float in [0, `MAX_FWHM_DEG`); errors quote it, the argument and the CLI option."""
    where = f"{name} ({option})" if option else name
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number ({hint}), got {value!r}.") from None
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{where} must be a finite number >= 0 ({hint}), got {value!r}.")
    if v >= MAX_FWHM_DEG:
        raise ValueError(
            f"{where} = {value!r} deg is out of range: expected {hint} in [0, {MAX_FWHM_DEG:g}) deg. "
            f"A peak whose FWHM spans half the circle or more is no peak (Table S2's widths are "
            f"2-18 deg); check the units (degrees, not radians or 1/A).")
    return v


def orientational_disorder(fwhm_az_deg: float, fwhm_rad_deg: float, fwhm_az_err_deg: float = 0.0,
                           fwhm_rad_err_deg: float = 0.0) -> DisorderResult:
    """NC orientational disorder dPhi from the azimuthal and radial FWHM of an AL peak (Eq. 7).

    Parameters
    ----------
    fwhm_az_deg
        Azimuthal FWHM of the peak, degrees (angle about the beam, Ewald-corrected or not).
    fwhm_rad_deg
        Radial FWHM as an angle, ``degrees(FWHM_q / |G|)``, degrees.
    fwhm_az_err_deg, fwhm_rad_err_deg
        One-sigma errors of the two FWHMs, degrees (independent).

    Returns
    -------
    DisorderResult
        ``dphi_deg = sqrt(fwhm_az^2 - fwhm_rad^2)`` and its error
        ``min(sqrt((az s_az)^2 + (rad s_rad)^2) / dphi, sqrt(s_D))`` with
        ``s_D = 2 sqrt((az s_az)^2 + (rad s_rad)^2)`` the error of ``D = dPhi^2``: first-order
        propagation where dPhi is resolved, the spread ``sqrt(s_D)`` of the square root of a
        quantity consistent with 0 where it is not (``resolved`` False; never 0 +- inf). Widths
        that agree within their errors give dPhi 0 (or a small value) with that finite error.

    Raises
    ------
    ValueError
        If a width or error is negative, not finite or not below 180 deg (naming the argument
        and its CLI option), or the radial FWHM exceeds the azimuthal one by more than the
        errors allow (Eq. 7 then has no real solution).

    Notes
    -----
    Eq. 7 of the paper, ``sigma_az^2 = sigma_rad^2 + dPhi^2`` with FWHMs. Error propagation:
    ``d dPhi / d az = az / dPhi``, ``d dPhi / d rad = -rad / dPhi``, errors independent
    (GUM, JCGM 100:2008, Eq. 10).

    Validation
    ----------
    Table S2: red 13.1 +- 0.5, 2.5 +- 0.1 -> 12.9 +- 0.5 (the table gives +- 0.6); all five
    rows within 0.05 deg in dPhi and 0.15 deg in the error (tests/fits/analyses/test_disorder.py).

    Examples
    --------
    >>> round(orientational_disorder(13.1, 2.5).dphi_deg, 1)
    12.9
    """
    az = _finite_nonnegative(fwhm_az_deg, "fwhm_az_deg", "the azimuthal FWHM in degrees", "--fwhm-az")
    rad = _finite_nonnegative(fwhm_rad_deg, "fwhm_rad_deg", "the radial FWHM in degrees", "--fwhm-rad")
    s_az = _finite_nonnegative(fwhm_az_err_deg, "fwhm_az_err_deg", "its one-sigma error in degrees",
                               "--fwhm-az-err")
    s_rad = _finite_nonnegative(fwhm_rad_err_deg, "fwhm_rad_err_deg", "its one-sigma error in degrees",
                                "--fwhm-rad-err")
    d2 = az * az - rad * rad                       # dPhi^2
    s_d2 = 2.0 * float(np.hypot(az * s_az, rad * s_rad))
    if d2 < 0 and -d2 > s_d2:
        raise ValueError(
            f"the radial FWHM {rad:g} deg is larger than the azimuthal FWHM {az:g} deg, so Eq. 7 "
            f"(FWHM_az^2 = FWHM_rad^2 + dPhi^2) has no real dPhi. Check that the two widths were "
            f"not swapped and that the radial FWHM is the angle degrees(FWHM_q / |G|).")
    dphi = float(np.sqrt(max(d2, 0.0)))
    # first-order propagation s_d2 / (2 dPhi) diverges at dPhi = 0; near 0 the spread of
    # sqrt(dPhi^2) is set by sqrt(s_d2) instead (the two meet at dPhi^2 = s_d2 / 4)
    err = float(min(s_d2 / (2.0 * dphi), np.sqrt(s_d2))) if dphi > 0 else float(np.sqrt(s_d2))
    return DisorderResult(az, s_az, rad, s_rad, dphi, err, resolved=bool(d2 > s_d2))


@dataclass(frozen=True)
class PeakWidths:
    """A 2D Gaussian fit of one AL peak on a polar grid.

    Attributes: ``q_center`` (1/A), ``chi_center_deg``, ``fwhm_q`` (1/A), ``fwhm_rad_deg``
    (``degrees(fwhm_q / q_center)``), ``fwhm_chi_deg`` (raw azimuthal FWHM), each with a
    ``*_err`` one-sigma error from the fit covariance; ``height`` and ``background``
    (intensity units of the image), ``redchi`` and the lmfit ``report``.
    """

    q_center: float
    q_center_err: float
    chi_center_deg: float
    chi_center_err_deg: float
    fwhm_q: float
    fwhm_q_err: float
    fwhm_rad_deg: float
    fwhm_rad_err_deg: float
    fwhm_chi_deg: float
    fwhm_chi_err_deg: float
    height: float
    background: float
    redchi: float
    report: str


def _gauss2d(q, chi, height, q0, chi0, sigma_q, sigma_chi, background):
    return background + height * np.exp(-0.5 * ((q - q0) / sigma_q) ** 2
                                         - 0.5 * ((chi - chi0) / sigma_chi) ** 2)


def fit_al_peak(image: np.ndarray, q: np.ndarray, chi_deg: np.ndarray, *, q_nominal: float = Q_AL_200,
                q_halfwidth: float = 0.2, chi_window_deg: tuple[float, float] | None = None,
                chi_halfwidth_deg: float = 25.0) -> PeakWidths:
    """Fit ``background + height * exp(-dq^2/2 s_q^2 - dchi^2/2 s_chi^2)`` to one AL peak.

    Parameters
    ----------
    image
        Polar image, shape ``(n_chi, n_q)``, rows chi, columns q (the layout of
        ``/entry/reduction/polar``); NaN where no pixel contributed (ignored).
    q
        Bin centres, 1/A, shape ``(n_q,)``.
    chi_deg
        Bin centres, degrees (pyFAI chi), shape ``(n_chi,)``.
    q_nominal
        Expected peak position, 1/A (default PbS 200, 2.117 1/A).
    q_halfwidth
        Half width of the q window around ``q_nominal``, 1/A.
    chi_window_deg
        ``(lo, hi)`` degrees in which to look for the peak; default all chi.
    chi_halfwidth_deg
        Half width of the chi window fitted around the brightest bin, degrees.

    Returns
    -------
    PeakWidths

    Raises
    ------
    ValueError
        If the shapes disagree, the window holds fewer than 12 finite bins, or the fit does
        not converge to a peak inside the window.

    Notes
    -----
    Paper, Fig. S6 (Gaussian cross sections of the 200_AL peak); here one 2D Gaussian fit by
    lmfit (Levenberg-Marquardt, errors from the covariance scaled by reduced chi-square,
    Newville et al., doi:10.5281/zenodo.11813). FWHM = 2.3548 sigma. No wrap of chi at
    +-180 deg: WAXS peaks sit inside the detector's ~90 deg of azimuth.

    Validation
    ----------
    A synthetic averaged pattern of the forward model with known disorder gives dPhi within
    1.5 deg (tests/fits/analyses/test_disorder.py).
    """
    import lmfit

    q_nominal = finite_number(q_nominal, "q_nominal", gt=0.0, unit="1/A", example="2.117 (PbS 200)")
    q_halfwidth = finite_number(q_halfwidth, "q_halfwidth", gt=0.0, unit="1/A", example="0.2")
    chi_halfwidth_deg = finite_number(chi_halfwidth_deg, "chi_halfwidth_deg", gt=0.0, le=180.0, unit="deg",
                                      example="25")
    if chi_window_deg is not None:
        chi_window_deg = interval(chi_window_deg, "chi_window_deg", unit="deg", lower=-360.0, example="-90,0")
    image = np.asarray(image, float)
    q = np.asarray(q, float)
    chi = np.asarray(chi_deg, float)
    if image.ndim != 2 or image.shape != (chi.size, q.size):
        raise ValueError(f"image must have shape (n_chi, n_q) = ({chi.size}, {q.size}) matching chi_deg "
                         f"and q, got {image.shape}. Pass the polar image with rows chi and columns q.")
    qsel = np.abs(q - q_nominal) <= q_halfwidth
    csel = np.ones(chi.size, bool)
    if chi_window_deg is not None:
        csel = (chi >= chi_window_deg[0]) & (chi <= chi_window_deg[1])
    sub = image[np.ix_(csel, qsel)]
    if np.count_nonzero(np.isfinite(sub)) < 12:
        raise ValueError(
            f"the window q = {q_nominal:g} +- {q_halfwidth:g} 1/A"
            + (f", chi in {tuple(chi_window_deg)} deg" if chi_window_deg is not None else "")
            + f" holds {np.count_nonzero(np.isfinite(sub))} finite bins (need >= 12): the AL ring is "
            f"masked or off the detector. Check q_nominal and the reduction's q range "
            f"({q.min():.3g}..{q.max():.3g} 1/A).")
    qs, cs = q[qsel], chi[csel]
    smooth = np.where(np.isfinite(sub), sub, -np.inf)
    i, j = np.unravel_index(np.argmax(smooth), smooth.shape)
    chi0, peak = cs[i], float(sub[i, j])
    rows = np.abs(cs - chi0) <= chi_halfwidth_deg
    cs, sub = cs[rows], sub[rows]
    cc, qq = np.meshgrid(cs, qs, indexing="ij")
    ok = np.isfinite(sub)
    z, qv, cv = sub[ok], qq[ok], cc[ok]
    bg0 = float(np.nanpercentile(z, 10))
    model = lmfit.Model(lambda q, chi, height, q0, chi0, sigma_q, sigma_chi, background:
                        _gauss2d(q, chi, height, q0, chi0, sigma_q, sigma_chi, background),
                        independent_vars=["q", "chi"])
    dq = float(np.median(np.diff(qs))) if qs.size > 1 else 0.01
    dc = float(np.median(np.abs(np.diff(cs)))) if cs.size > 1 else 1.0
    params = model.make_params(height=max(peak - bg0, 1e-12), q0=float(qs[j]),
                               chi0=float(chi0), sigma_q=max(0.02, dq), sigma_chi=max(5.0, dc),
                               background=bg0)
    params["sigma_q"].set(min=dq / 4, max=q_halfwidth)
    params["sigma_chi"].set(min=dc / 4, max=4 * chi_halfwidth_deg)
    params["q0"].set(min=qs.min(), max=qs.max())
    params["chi0"].set(min=cs.min(), max=cs.max())
    result = model.fit(z, params, q=qv, chi=cv)
    p = result.params
    if not result.success or p["height"].value <= 0:
        raise ValueError(f"the 2D Gaussian fit of the AL peak near q = {q_nominal:g} 1/A, chi = "
                         f"{chi0:g} deg did not converge to a peak ({result.message}). Average more "
                         f"frames or narrow the window (q_halfwidth, chi_window_deg).")

    def err(name):
        e = p[name].stderr
        return float(e) if e is not None and np.isfinite(e) else float("nan")

    fq, fq_err = _FWHM_PER_SIGMA * p["sigma_q"].value, _FWHM_PER_SIGMA * err("sigma_q")
    q0 = p["q0"].value
    rad = np.degrees(fq / q0)
    rad_err = np.degrees(np.hypot(fq_err / q0, fq * err("q0") / q0 ** 2))
    return PeakWidths(q_center=float(q0), q_center_err=err("q0"), chi_center_deg=float(p["chi0"].value),
                      chi_center_err_deg=err("chi0"), fwhm_q=float(fq), fwhm_q_err=float(fq_err),
                      fwhm_rad_deg=float(rad), fwhm_rad_err_deg=float(rad_err),
                      fwhm_chi_deg=float(_FWHM_PER_SIGMA * abs(p["sigma_chi"].value)),
                      fwhm_chi_err_deg=float(_FWHM_PER_SIGMA * err("sigma_chi")),
                      height=float(p["height"].value), background=float(p["background"].value),
                      redchi=float(result.redchi), report=result.fit_report())


def class_names(f: h5py.File, key: str) -> list[str]:
    """Class names of the labels ``key`` of an open HDF5 file, in the order of the label codes.

    Parameters
    ----------
    f : h5py.File
        Open results or truth file.
    key : str
        Path of an integer label dataset, e.g. ``/entry/classification/label``.

    Returns
    -------
    list of str
        From a JSON ``class_names`` attribute of its group (``xmodel classify``), a
        ``label_names`` dataset beside it (twin truth) or a ``label_names`` attribute; empty
        when none is there.
    """
    group = f[key].parent
    if "class_names" in group.attrs:
        names = json.loads(group.attrs["class_names"])
    elif "label_names" in group:
        names = group["label_names"][()]
    else:
        names = f[key].attrs.get("label_names", f.attrs.get("label_names", []))
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def domain_frames(labels_file: str | Path | None, domain: str | int | None, n_frames: int,
                  dataset: str | None = None) -> np.ndarray:
    """Frame indices of one domain from a labels file (all frames when ``domain`` is None).

    Parameters
    ----------
    labels_file
        HDF5 file with per-frame integer labels: ``dataset`` if given, else the first of
        ``/entry/classification/label`` (written by ``xmodel classify``, names in the group's
        JSON attribute ``class_names``) and ``/truth/label`` (digital-twin truth, names in a
        ``label_names`` dataset or attribute).
    domain
        A domain name (e.g. ``"red"``) or an integer label; None selects every frame.
    n_frames
        Number of frames of the reduced scan (labels must have this length).
    dataset
        Path of the labels dataset inside ``labels_file``.

    Returns
    -------
    numpy.ndarray
        int64 frame indices, sorted.

    Notes
    -----
    Label -1 means "empty" (twin truth). No formula.

    Validation
    ----------
    tests/fits/analyses/test_disorder.py (names, integers, bad names).
    """
    if domain is None:
        return np.arange(n_frames)
    if labels_file is None:
        raise ValueError(f"--domain {domain!r} needs a labels file (--labels FILE, e.g. the results "
                         f"of `xmodel classify` or a twin's truth.h5) to know which frames belong to it.")
    path = Path(labels_file)
    if not path.exists():
        raise FileNotFoundError(f"labels file {str(path)!r} does not exist; pass the HDF5 file that holds "
                                f"/entry/classification/labels or /truth/label.")
    with h5py.File(path, "r") as f:
        names = [dataset] if dataset else ["/entry/classification/label", "/truth/label"]
        key = next((n for n in names if n in f), None)
        if key is None:
            raise ValueError(f"labels file {str(path)!r} has none of the datasets {names}; pass the "
                             f"results of `xmodel classify` or a twin's truth.h5.")
        labels = np.asarray(f[key][()]).reshape(-1)
        label_names = class_names(f, key)
    if labels.size != n_frames:
        raise ValueError(f"labels dataset {key!r} in {str(path)!r} has {labels.size} entries but the scan "
                         f"has {n_frames} frames; use the labels of the same scan.")
    if isinstance(domain, str) and not domain.lstrip("-").isdigit():
        lowered = [n.lower() for n in label_names]
        if domain.lower() not in lowered:
            raise ValueError(f"unknown domain {domain!r} in {str(path)!r}; valid names are {label_names} "
                             f"(or pass an integer label).")
        value = lowered.index(domain.lower())
    else:
        value = int(domain)
    frames = np.flatnonzero(labels == value)
    if frames.size == 0:
        raise ValueError(f"domain {domain!r} (label {value}) has no frames in {str(path)!r}; valid labels "
                         f"present are {sorted(set(labels.tolist()))}.")
    return frames


def average_polar(results: str | Path, frames: np.ndarray | None = None,
                  batch: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean polar image of chosen frames of a reduced scan, streamed in batches.

    Parameters
    ----------
    results
        Reduced scan (``/entry/reduction/polar``, ``q`` in 1/A, ``chi`` in degrees).
    frames
        Frame indices; default all.
    batch
        Frames read at once.

    Returns
    -------
    image, q, chi_deg
        ``(n_chi, n_q)`` nan-mean over frames (NaN where no frame has a value), and the axes.

    Notes
    -----
    Domain averaging as in the paper (Fig. S3, S6). No formula.

    Validation
    ----------
    tests/fits/analyses/test_disorder.py (equals numpy's nanmean).
    """
    path = Path(results)
    if not path.exists():
        raise FileNotFoundError(f"results file {str(path)!r} does not exist; run `xmodel reduce` first.")
    with h5py.File(path, "r") as f:
        if "/entry/reduction/polar" not in f:
            raise ValueError(f"{str(path)!r} has no /entry/reduction/polar; it is not a reduced scan "
                             f"(run `xmodel reduce MASTER OUT` and pass OUT).")
        polar = f["/entry/reduction/polar"]
        q = f["/entry/reduction/q"][()]
        chi = f["/entry/reduction/chi"][()]
        idx = np.arange(polar.shape[0]) if frames is None else np.asarray(frames, np.int64)
        total = np.zeros(polar.shape[1:])
        count = np.zeros(polar.shape[1:])
        for s in range(0, idx.size, batch):
            block = polar[np.sort(idx[s:s + batch])]
            ok = np.isfinite(block)
            total += np.where(ok, block, 0.0).sum(axis=0)
            count += ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        image = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return image, q, chi


def domain_disorder(image: np.ndarray, q: np.ndarray, chi_deg: np.ndarray, *,
                    wavelength_A: float | None = None, ewald_correction: bool = True,
                    **fit_options) -> tuple[DisorderResult, PeakWidths]:
    """dPhi (Eq. 7) of a domain-averaged polar image from its 200_AL peak.

    Parameters
    ----------
    image, q, chi_deg
        As `fit_al_peak` (1/A, degrees).
    wavelength_A
        X-ray wavelength, Angstrom. With ``ewald_correction`` the chi FWHM is multiplied by
        ``cos(theta)``, ``sin(theta) = q lambda / 4 pi`` (see the module docstring).
    ewald_correction
        Apply the ``cos(theta)`` factor (needs ``wavelength_A``).
    **fit_options
        Passed to `fit_al_peak`.

    Returns
    -------
    (DisorderResult, PeakWidths)

    Notes
    -----
    Eq. 7; Ewald factor from the ring radius ``|q| cos(theta)`` (module docstring).

    Validation
    ----------
    Forward-model pattern of the red domain (dPhi = 12.9 deg): recovered within 0.3 deg,
    closer with the Ewald factor than without (tests/fits/analyses/test_disorder.py).
    """
    if ewald_correction and wavelength_A is None:
        raise ValueError("the Ewald cos(theta) correction needs the wavelength (wavelength_A, or "
                         "--wavelength); pass it, or switch the correction off (--no-ewald-correction).")
    if ewald_correction:
        try:
            lam = float(wavelength_A)
        except (TypeError, ValueError):
            lam = float("nan")
        if not (np.isfinite(lam) and 0.0 < lam < 100.0):
            raise ValueError(f"wavelength_A (--wavelength) = {wavelength_A!r} A: expected a finite X-ray "
                             "wavelength in (0, 100) A, e.g. 0.898 at 13.8 keV.")
    widths = fit_al_peak(image, q, chi_deg, **fit_options)
    factor = 1.0
    if ewald_correction:
        s = widths.q_center * float(wavelength_A) / (4.0 * np.pi)
        if not s < 1.0:
            raise ValueError(f"q = {widths.q_center:.4g} 1/A lies beyond the Ewald-sphere limit 4 pi / lambda = "
                             f"{4 * np.pi / float(wavelength_A):.4g} 1/A of wavelength_A (--wavelength) = "
                             f"{wavelength_A!r} A; check the wavelength (Angstrom, not metres or nm).")
        factor = float(np.sqrt(1.0 - s * s))
    az_err = widths.fwhm_chi_err_deg * factor
    rad_err = widths.fwhm_rad_err_deg
    known = np.isfinite(az_err) and np.isfinite(rad_err)
    try:
        result = orientational_disorder(widths.fwhm_chi_deg * factor, widths.fwhm_rad_deg,
                                        az_err if known else 0.0, rad_err if known else 0.0)
    except ValueError as exc:
        raise ValueError(f"the 200_AL peak fitted at q = {widths.q_center:.4g} 1/A, chi = "
                         f"{widths.chi_center_deg:.1f} deg gives no usable widths (azimuthal FWHM "
                         f"{widths.fwhm_chi_deg:.4g} deg, radial {widths.fwhm_rad_deg:.4g} deg): {exc} "
                         "Check that the averaged frames hold a 200_AL peak (--domain).") from None
    if not known:   # the peak fit gave no error estimate: say so, do not report +- 0
        result = dataclasses.replace(result, fwhm_az_err_deg=float(az_err), fwhm_rad_err_deg=float(rad_err),
                                     dphi_err_deg=float("nan"))
    return result, widths
