"""The schema of ``/entry/fits``: every dataset's name, unit, dtype and meaning, and every read
and write of it.

One row per scan point (frame). Status codes are `fits.status.FitStatus` codes, listed in the
group's ``status_codes`` attribute. Besides the datasets the group holds the run's provenance:
``settings`` (JSON, every `fits.scan.settings.FitSettings` key), ``config`` (JSON, the resolved
`xmodel.config.Config.to_dict`), ``config_sources``, ``source`` (the reduced scan), and the
progress attributes ``frames_done`` and ``neighbour_passes_done`` (a killed run resumes there).
A resume with other settings, another config or another reduction is refused with the
differing keys named (`prepare`); a group in which no frame was written yet is simply replaced.

NeXus (`xmodel.nexus`): ``/entry/fits`` is an NXprocess (fields ``program``, ``version``,
``date``, ``command_line``, ``parameters`` = the settings and ``resolved_config`` as JSON, the
config files as NXnote groups ``config_<k>``); `write_maps` adds ``/entry/fits/maps``, an
NXcollection of 2D NXdata images (rows y, columns x in um on the reduction's scan grid) of
`MAP_DATASETS`, and points the file's ``default`` chain at the lattice-constant map. The
per-frame datasets stay where they are; dimensionless ones carry no ``units`` attribute.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from fits.scan.settings import FitSettings, differing_keys
from fits.status import FitStatus
from xmodel import nexus
from xmodel.io import read_group
from xmodel.reduced import GROUP as REDUCTION_GROUP
from xmodel.reduced import ReducedScan

#: the group this module owns
FITS = "entry/fits"

#: datasets written under /entry/fits: name -> (units, description)
FIT_DATASETS = {
    "orientation_matrix": ("", "SL crystal -> lab rotation (N, 3, 3), docs/conventions.md"),
    "zone_axis": ("", "SL crystal direction b (unit) that the reported tilt and in-plane angle refer to"),
    "lattice_constant": ("angstrom", "SL cubic lattice constant a"),
    "tilt_deg": ("degree", "out-of-plane rotation hypot(tilt1, tilt2) of the zone axis away from the beam"),
    "tilt1_deg": ("degree", "tilt about lab e1 in R S = R_e1(tilt1) R_e2(tilt2) R_e3(inplane) R_base(zone)"),
    "tilt2_deg": ("degree", "tilt about lab e2 (same decomposition)"),
    "inplane_deg": ("degree", "rotation about the beam e3 relative to base_orientation(zone, reference)"),
    "disorder_deg": ("degree", "NC orientational disorder dPhi (FWHM, Eq. 7)"),
    "configuration": ("", "NC orientation relationship conf1 / conf2 ('' without a fit)"),
    "relationship": ("", "AL crystal -> SL crystal (N, 3, 3) of the fit: the symmetric variant S R_or of the "
                         "configuration that matches the WAXS peaks (xmodel.orientation.relationship_variants)"),
    "sl_scale": ("counts", "SL peak height at P(q) = 1 per pixel at unit solid angle"),
    "diffuse_scale": ("counts", "isotropic diffuse SAXS scale"),
    "al_scale": ("counts", "200 AL peak height per pixel at unit solid angle"),
    "background": ("counts", "constant background per pixel at unit solid angle"),
    "objective": ("", "Poisson deviance of the fit (sum over the fitted bins, weighted by their pixels)"),
    "dispersion": ("", "Pearson X^2 / (n_points - n_params) of the fit (quasi-likelihood dispersion, McCullagh & "
                       "Nelder 1989 sec. 9.2): 1 for counting noise and a right model; the standard errors are "
                       "scaled by sqrt(max(dispersion, 1)) and the likelihood-ratio tests divided by "
                       "max(dispersion, 1)"),
    "orientation_stderr_deg": ("degree", "one orientation uncertainty: sqrt(trace(M C M^T)), the root mean square "
                                         "misorientation implied by the covariance C of tilt1, tilt2, inplane "
                                         "(fits.scan.angles.orientation_stderr_deg)"),
    "orientation_covariance_deg2": ("degree^2", "covariance (3, 3) of the lab rotation vector of the orientation "
                                                "error, M C M^T (fits.scan.angles.lab_rotation_covariance): the "
                                                "error of any angle of the orientation follows from it; "
                                                "tilt1/tilt2/inplane_deg_stderr are on the reported angles' axes"),
    "al_gain": ("", "Poisson deviance gain of the AL term (AL signal strength): in the linear-scale fit, or of "
                    "the fitted AL term for frames refitted in a neighbour pass"),
    "configuration_margin": ("", "deviance of the other configuration's fit minus that of the chosen one "
                                 "(> 0; small values mean Conf1/Conf2 is barely decided)"),
    "search_score": ("", "cosine similarity of the best template match (0..1)"),
    "significance": ("", "largest SL ring peak significance (peak over robust noise)"),
    "residual_significance": ("", "largest SL ring peak significance left after subtracting the fitted SL "
                                  "peaks (a second orientation: mixed pattern)"),
    "al_residual_significance": ("", "largest AL ring excess left after the fit, in Poisson standard deviations "
                                     "of one chi bin (a second NC orientation: mixed pattern)"),
    "status": ("", "fits.status.FitStatus code (the group's status_codes attribute)"),
    "message": ("", "status message"),
}
#: parameters with a standard error, written as ``<name>_stderr``
STDERR_OF = ("lattice_constant", "tilt1_deg", "tilt2_deg", "inplane_deg", "disorder_deg", "sl_scale",
             "diffuse_scale", "al_scale", "background")
#: every dataset of the group, in writing order
ALL_DATASETS = tuple(FIT_DATASETS) + tuple(k + "_stderr" for k in STDERR_OF)
#: per-frame datasets shown as scan maps by `write_maps` (the first is the default plot)
MAP_DATASETS = ("lattice_constant", "tilt_deg", "inplane_deg", "disorder_deg", "status", "dispersion",
                "orientation_stderr_deg", "lattice_constant_stderr")
_MATRICES = ("orientation_matrix", "relationship", "orientation_covariance_deg2")
_STRINGS = ("configuration", "message")


def row_shape(key: str) -> tuple[int, ...]:
    """Shape of one frame's value of dataset ``key``."""
    return (3, 3) if key in _MATRICES else (3,) if key == "zone_axis" else ()


def dtype_of(key: str):
    """HDF5 dtype of dataset ``key``: variable-length strings, int32 status codes, else float64."""
    return h5py.string_dtype() if key in _STRINGS else np.int32 if key == "status" else np.float64


def empty_results(n: int) -> dict[str, np.ndarray]:
    """Per-frame arrays of ``n`` frames in the schema's layout: NaN, '' and status FAILED."""
    out: dict[str, np.ndarray] = {}
    for k in ALL_DATASETS:
        if k in _STRINGS:
            out[k] = np.array([""] * n, dtype=object)
        elif k == "status":
            out[k] = np.full(n, FitStatus.FAILED.code, np.int32)
        else:
            out[k] = np.full((n,) + row_shape(k), np.nan)
    return out


def status_codes_text() -> str:
    """``"0: ok; 1: no signal; ..."`` for the ``status_codes`` attribute."""
    return "; ".join(f"{s.code}: {s.value}" for s in FitStatus)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def provenance(source: Path, n: int, cfg, settings: FitSettings) -> dict[str, dict]:
    """What a resume must agree on: the reduction and its frame count, the resolved config
    (without its ``[fit]`` table, which ``settings`` holds) and every setting that changes a result."""
    config = cfg.to_dict() if hasattr(cfg, "to_dict") else {}
    config = {k: v for k, v in config.items() if k != "fit"}
    return {"run": {"source": str(Path(source).resolve()), "frames": int(n)},
            "config": _flatten(config),
            "settings": settings.to_flat(fingerprint=True)}


def prepare(out: Path, n: int, source: Path, cfg, settings: FitSettings) -> int:
    """Create ``/entry/fits`` of ``n`` frames in ``out``, or check one to resume; returns the
    frames already done.

    Raises
    ------
    ValueError
        If ``out`` holds fits of another run (other reduction, frame count, config or setting)
        with frames done, naming every differing key.
    """
    mine = provenance(source, n, cfg, settings)
    with h5py.File(out, "a") as f:
        g = f.get(FITS)
        if g is not None:
            done = int(g.attrs.get("frames_done", 0))
            if done > 0 and any(part + "_fingerprint" not in g.attrs for part in mine):
                raise ValueError(f"{out} already holds /entry/fits of another run ({done} frames done) written "
                                 f"by an older xmodel, without the settings it ran with; delete /entry/fits "
                                 f"or choose another --out.")
            stored = {part: json.loads(g.attrs.get(part + "_fingerprint", "{}")) for part in mine}
            if not any(differing_keys(stored[part], mine[part]) for part in mine):
                return done
            if done > 0:
                shown = []
                for part in mine:
                    for k in differing_keys(stored[part], mine[part]):
                        name = f"fit.{k}" if part == "settings" else f"{part}.{k}"
                        shown.append(f"{name} (stored {stored[part].get(k, 'missing')!r}, "
                                     f"now {mine[part].get(k, 'missing')!r})")
                raise ValueError(f"{out} already holds /entry/fits of another run ({done} frames done) that "
                                 f"differs in {', '.join(shown)}; rerun with the same settings to resume, "
                                 f"or delete /entry/fits or choose another --out.")
            del f[FITS]                   # nothing was written into it: start afresh
        nexus.create_entry(f)
        g = f.require_group(FITS)
        nexus.describe_process(g, program="xmodel fit", configs=[Path(c) for c in getattr(cfg, "sources", ())],
                               resolved_config=cfg.to_dict() if hasattr(cfg, "to_dict") else {},
                               parameters=settings.to_flat())
        for k in ALL_DATASETS:
            dt = dtype_of(k)
            fill = None if k in _STRINGS else (FitStatus.FAILED.code if k == "status" else np.nan)
            ds = g.create_dataset(k, shape=(n,) + row_shape(k), dtype=dt, fillvalue=fill)
            units, description = _units_description(k)
            if units:
                ds.attrs["units"] = units
            ds.attrs["description"] = description
        for part, values in mine.items():
            g.attrs[part + "_fingerprint"] = json.dumps(values, sort_keys=True)
        g.attrs["settings"] = json.dumps(settings.to_flat(), sort_keys=True)
        g.attrs["config"] = json.dumps(cfg.to_dict() if hasattr(cfg, "to_dict") else {}, sort_keys=True)
        g.attrs["config_sources"] = json.dumps(list(getattr(cfg, "sources", ())))
        g.attrs["source"] = str(Path(source).resolve())
        g.attrs["frames_done"] = 0
        g.attrs["neighbour_passes_done"] = 0
        g.attrs["status_codes"] = status_codes_text()
        g.attrs["vary"] = ",".join(settings.refine.vary)
        g.attrs["description"] = ("Per scan point fits of the xmodel forward model (fits.scan): template "
                                  "search, Conf1/Conf2 by the WAXS part, batched refinement, neighbour passes.")
        return 0


def _units_description(key: str) -> tuple[str, str]:
    """(unit string or '' when dimensionless, description) of dataset ``key``."""
    if key.endswith("_stderr"):
        base = key[:-len("_stderr")]
        return FIT_DATASETS[base][0], f"standard error of {base} (from the fit's Jacobian)"
    return FIT_DATASETS[key]


def write_maps(out: Path, scan: ReducedScan) -> None:
    """Scan maps of `MAP_DATASETS` as 2D NXdata in ``/entry/fits/maps`` of ``out`` and the file's
    ``default`` chain to the lattice-constant map.

    The images are the per-frame values placed on ``scan.grid`` (NaN where no frame, or frame
    not fitted yet), rows y and columns x in um (scan row and column indices when the reduction
    knows a scan shape but no positions). Without a grid the lattice constants are shown per
    frame (1D NXdata over the frame index).
    """
    with h5py.File(out, "a") as f:
        g = f[FITS]
        if "maps" in g:
            del g["maps"]
        maps = nexus.require_group(g, "maps", "NXcollection")
        if scan.grid is None:
            values = g[MAP_DATASETS[0]][()]
            units, _ = _units_description(MAP_DATASETS[0])
            nx = nexus.create_nxdata(maps, MAP_DATASETS[0], MAP_DATASETS[0], values, units=units or None,
                                     long_name=MAP_DATASETS[0].replace("_", " "),
                                     axes=[("frame", np.arange(values.shape[0]), None, "frame")],
                                     title=f"{MAP_DATASETS[0].replace('_', ' ')} per frame")
            nexus.set_default(nx)
            return
        axes = scan.map_axes()
        first = None
        for key in MAP_DATASETS:
            if key not in g:
                continue
            units, _ = _units_description(key)
            label = key.replace("_deg", "").replace("_", " ") + (f" ({units})" if units else "")
            nx = nexus.create_nxdata(maps, key, key, scan.map_image(g[key][()]), axes=axes,
                                     units=units or None, long_name=label, title=label)
            if first is None:
                first = nx
        if first is not None:
            nexus.set_default(first)


def link_reduction(out: Path, results: Path) -> None:
    """Link ``/entry/reduction`` of ``results`` into ``out`` (when they are different files)."""
    if Path(out).resolve() == Path(results).resolve():
        return
    with h5py.File(out, "a") as f:
        if REDUCTION_GROUP not in f:
            f.require_group("entry")["reduction"] = h5py.ExternalLink(str(Path(results).resolve()), REDUCTION_GROUP)


def write_batch(out: Path, start: int, stop: int, rows: dict[str, np.ndarray]) -> None:
    """Write frames ``start:stop`` and advance ``frames_done`` to ``stop`` (flushed: a checkpoint)."""
    with h5py.File(out, "a") as f:
        g = f[FITS]
        for k, v in rows.items():
            if k in g:
                g[k][start:stop] = v
        g.attrs["frames_done"] = stop
        f.flush()


def write_frames(out: Path, frames: np.ndarray, values: dict[str, np.ndarray]) -> None:
    """Rewrite the rows ``frames`` of every dataset from the full-length arrays ``values``."""
    order = np.sort(np.asarray(frames, int))
    with h5py.File(out, "a") as f:
        g = f[FITS]
        for k in ALL_DATASETS:
            if k in g and k in values:
                g[k][order] = values[k][order]


def progress(out: Path) -> tuple[int, int]:
    """``(frames_done, neighbour_passes_done)`` of the fits in ``out``."""
    with h5py.File(out, "r") as f:
        a = f[FITS].attrs
        return int(a["frames_done"]), int(a.get("neighbour_passes_done", 0))


def set_neighbour_passes_done(out: Path, k: int) -> None:
    """Record that ``k`` neighbour passes are done."""
    with h5py.File(out, "a") as f:
        f[FITS].attrs["neighbour_passes_done"] = int(k)


def has_fits(path: str | Path) -> bool:
    """True when ``path`` holds ``/entry/fits``."""
    with h5py.File(path, "r") as f:
        return FITS in f


def read_fits(path: str | Path) -> dict[str, np.ndarray]:
    """Every per-frame dataset of ``/entry/fits`` as numpy arrays (strings decoded), and
    ``frames_done`` (the NXprocess fields and the maps are left out)."""
    out, attrs = read_group(path, "/" + FITS, "run xmodel fit first")
    out = {k: v for k, v in out.items() if np.ndim(v) >= 1}      # per-frame arrays, not provenance
    out["frames_done"] = int(attrs["frames_done"])
    return out


def read_rows(path: str | Path, index: np.ndarray, n_frames: int | None = None) -> dict[str, np.ndarray]:
    """Rows ``index`` of every per-frame dataset of ``/entry/fits`` (``n_frames``: the frames the
    caller's reduction has; the fits must have as many)."""
    r = read_fits(path)
    n = int(r["status"].shape[0])
    if n_frames is not None and n != int(n_frames):
        raise ValueError(f"{path} holds fits of {n} frames but the reduction has {n_frames}; "
                         f"pass the scan fit of the same scan (--fits), or leave --fits out.")
    index = np.asarray(index, int)
    return {k: v[index] for k, v in r.items() if isinstance(v, np.ndarray) and v.shape[:1] == (n,)}


def read_settings(path: str | Path) -> dict:
    """The flat settings a scan fit ran with (``settings`` attribute)."""
    with h5py.File(path, "r") as f:
        return json.loads(f[FITS].attrs["settings"])
