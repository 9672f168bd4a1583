"""The schema of ``/entry/fits``: every dataset's name, unit, dtype and meaning, and every read
and write of it.

One row per scan point (frame). Status codes are `fits.status.FitStatus` codes, listed in the
group's ``status_codes`` attribute. Besides the datasets the group holds the run's provenance:
``settings`` (JSON, every `fits.scan.settings.FitSettings` key), ``config`` (JSON, the resolved
`xmodel.config.Config.to_dict`), ``config_sources``, ``source`` (the reduced scan), and the
progress attributes ``frames_done``, ``neighbour_passes_done`` and ``second_grains_done`` (the
neighbour-grain mixed test, `fits.scan.second_grain`, ran; a killed run resumes there).
A resume with other settings, another config or another reduction is refused with the
differing keys named (`prepare`), and so is a group whose progress or datasets do not fit the
scan (a truncated or hand-edited file); a group in which no frame was written yet is simply
replaced.

Checkpoints: `write_batch` writes a batch's rows, flushes, then advances ``frames_done``. A
neighbour pass (`write_frames`) first keeps the rows it replaces in the subgroup ``undo``, and
`set_neighbour_passes_done` records the pass (with the frames it changed, attribute
``neighbour_changed``, which the next pass starts from) before it drops them; a run killed in
between is put back to the state before the pass by `roll_back`, so that the resumed pass starts
from the same rows as an uninterrupted one and gives the same result. The neighbour-grain mixed
test writes its rows the same way and `set_second_grains_done` records it.

NeXus (`xmodel.nexus`): ``/entry/fits`` is an NXprocess (fields ``program``, ``version``,
``date``, ``command_line``, ``environment`` = the software and JAX devices of the process that
wrote it (`xmodel.nexus.environment`), ``parameters`` = the settings and ``resolved_config`` as
JSON, the config files as NXnote groups ``config_<k>``); `write_maps` adds ``/entry/fits/maps``, an
NXcollection of 2D NXdata images (rows y, columns x in um on the reduction's scan grid) of
`MAP_DATASETS`, and points the file's ``default`` chain at the lattice-constant map. The
per-frame datasets stay where they are; dimensionless ones carry no ``units`` attribute.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np

from fits.scan.settings import FitSettings, differing_keys
from fits.status import FitStatus
from xmodel import nexus
from xmodel.io import read_group
from xmodel.outputs import OutputError, describe_os_error, is_locked, write_failure
from xmodel.reduced import GROUP as REDUCTION_GROUP
from xmodel.reduced import ReducedScan

log = logging.getLogger(__name__)

#: the group this module owns
FITS = "entry/fits"
#: subgroup of FITS holding the rows a neighbour pass replaced until the pass is recorded
UNDO = "undo"

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
    "relationship": ("", ("AL crystal -> SL crystal (N, 3, 3) of the fit: the symmetric variant S R_or of the "
                         "configuration that matches the WAXS peaks (xmodel.orientation.relationship_variants), "
                         "times the NC misorientation R_mis where mis1_deg..mis3_deg are refined (fit.vary)")),
    "sl_radial_width": ("1/angstrom", ("radial Gaussian sigma of the SL peaks: refined where fit.vary lists it "
                                        "(a grain's Scherrer width), else the config's")),
    "mosaic_deg": ("degree", ("SL mosaic spread (tangential sigma of the SL peaks over |G|): refined where "
                              "fit.vary lists it, else the config's")),
    "al_radial_width": ("1/angstrom", ("radial Gaussian sigma of the AL peaks (Scherrer width of the NCs): "
                                       "refined where fit.vary lists it, else the config's")),
    "sl_scale": ("counts", "SL peak height at P(q) = 1 per pixel at unit solid angle"),
    "diffuse_scale": ("counts", "isotropic diffuse SAXS scale"),
    "al_scale": ("counts", "200 AL peak height per pixel at unit solid angle"),
    "background": ("counts", "constant background per pixel at unit solid angle"),
    "objective": ("", "Poisson deviance of the fit (sum over the fitted bins, weighted by their pixels)"),
    "dispersion": ("", ("Pearson X^2 / (n_points - n_params) of the fit (quasi-likelihood dispersion, McCullagh & "
                       "Nelder 1989 sec. 9.2): 1 for counting noise and a right model; the standard errors are "
                       "scaled by sqrt(max(dispersion, 1)) and the likelihood-ratio tests divided by "
                       "max(dispersion, 1)")),
    "orientation_stderr_deg": ("degree", ("one orientation uncertainty: sqrt(trace(M C M^T)), the root mean square "
                                         "misorientation implied by the covariance C of tilt1, tilt2, inplane "
                                         "(fits.scan.angles.orientation_stderr_deg)")),
    "orientation_covariance_deg2": ("degree^2", ("covariance (3, 3) of the lab rotation vector of the orientation "
                                                "error, M C M^T (fits.scan.angles.lab_rotation_covariance): the "
                                                "error of any angle of the orientation follows from it; "
                                                "tilt1/tilt2/inplane_deg_stderr are on the reported angles' axes")),
    "al_gain": ("", ("Poisson deviance gain of the AL term (AL signal strength): in the linear-scale fit, or of "
                    "the fitted AL term for frames refitted in a neighbour pass")),
    "configuration_margin": ("", ("deviance of the other configuration's fit minus that of the chosen one "
                                 "(> 0; small values mean Conf1/Conf2 is barely decided)")),
    "search_score": ("", "cosine similarity of the best template match (0..1); NaN: no SL signal, not searched"),
    "significance": ("", "largest SL ring peak significance (peak over robust noise)"),
    "residual_significance": ("", ("largest SL ring peak significance left after subtracting the fitted SL "
                                  "peaks (a second orientation: mixed pattern)")),
    "al_residual_significance": ("", ("largest AL ring excess left after the fit away from its AL peaks, in "
                                     "Poisson standard deviations of one chi bin over the square root of the fit's "
                                     "dispersion on its AL peaks (a second NC orientation: mixed pattern)")),
    "status": ("", "fits.status.FitStatus code (the group's status_codes attribute)"),
    "message": ("", "status message"),
}
#: the peak widths the fit may refine (`fits.parameters` names), stored with every fit
WIDTHS = ("sl_radial_width", "mosaic_deg", "al_radial_width")
#: parameters with a standard error, written as ``<name>_stderr``
STDERR_OF = ("lattice_constant", "tilt1_deg", "tilt2_deg", "inplane_deg", "disorder_deg", "sl_scale",
             "diffuse_scale", "al_scale", "background", "sl_radial_width", "mosaic_deg", "al_radial_width")
#: datasets added to the schema after its first version: a file without them was written by an
#: older xmodel (`prepare` says so instead of calling it damaged)
ADDED_LATER = WIDTHS + tuple(k + "_stderr" for k in WIDTHS)
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


def open_output(out: Path) -> h5py.File:
    """``out`` opened for writing (created if missing), or an `OutputError` that says why it
    cannot be: a folder, a file that is not HDF5, a file another program holds open, no
    permission."""
    out = Path(out)
    try:
        return h5py.File(out, "a")
    except OSError as err:
        if out.is_dir():
            raise OutputError(f"{out} is a folder, but the fits go to an HDF5 file; give a file name, e.g. "
                              f"--out {out / 'fits.h5'}.") from err
        if out.exists() and is_locked(out):
            raise OutputError(f"{out} is open in another program (an HDF5 viewer, or another xmodel run, holds "
                              f"its file lock); close it there or wait for that run to end, then run the same "
                              f"command again.") from err
        if out.is_file() and not h5py.is_hdf5(out):
            raise OutputError(f"{out} exists but is not an HDF5 file; choose another --out (or delete {out} "
                              f"if it is not needed).") from err
        cause, fix = describe_os_error(err)
        raise OutputError(f"Cannot open {out} for writing the fits: {cause}; {fix} and run again.") from err


def _damaged(out: Path, problem: str) -> ValueError:
    return ValueError(f"{out}: /{FITS} is damaged: {problem}; the file was cut short or edited. Delete "
                      f"/{FITS} (or the file) or choose another --out, and run again.")


def _plain(value):
    """An attribute value as Python writes it (7, not np.int64(7))."""
    return value if isinstance(value, (str, bytes)) else np.asarray(value).tolist()


def _frames_done(out: Path, g: h5py.Group, n: int) -> int:
    """The ``frames_done`` attribute of ``g``, checked to be an integer from 0 to ``n``."""
    raw = g.attrs.get("frames_done", 0)
    try:
        done = int(np.asarray(raw).item())
        ok = float(np.asarray(raw).item()) == done
    except (TypeError, ValueError):
        ok = False
    if not ok or not 0 <= done <= n:
        raise _damaged(out, f"it records frames_done = {_plain(raw)!r}, but the scan has {n} frames (expected 0 "
                            f"to {n})")
    return done


def _json_attr(out: Path, g: h5py.Group, name: str) -> dict:
    try:
        value = json.loads(g.attrs.get(name, "{}"))
    except (TypeError, ValueError):
        raise _damaged(out, f"its attribute {name!r} is not JSON") from None
    if not isinstance(value, dict):
        raise _damaged(out, f"its attribute {name!r} is not a JSON object")
    return value


def _check_layout(out: Path, g: h5py.Group, n: int) -> None:
    """Every dataset of the schema is there with ``n`` rows of its shape, and the neighbour-pass
    counter is a non-negative integer."""
    for k in ALL_DATASETS:
        ds = g.get(k)
        want = (n,) + row_shape(k)
        if ds is None and k in ADDED_LATER:
            raise ValueError(f"{out}: /{FITS} was written by an older xmodel, without the dataset {k!r}; "
                             f"delete /{FITS} (or the file) or choose another --out, and run again.")
        if not isinstance(ds, h5py.Dataset):
            raise _damaged(out, f"the dataset {k!r} is missing")
        if ds.shape != want:
            raise _damaged(out, f"the dataset {k!r} has shape {ds.shape}, expected {want} for {n} frames")
    raw = g.attrs.get("neighbour_passes_done", 0)
    try:
        ok = int(np.asarray(raw).item()) >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise _damaged(out, f"it records neighbour_passes_done = {_plain(raw)!r} (expected an integer >= 0)")


def _check_resume(out: Path, g: h5py.Group, done: int, n: int, mine: dict[str, dict]) -> None:
    """The fits in ``g`` (``done`` frames) are of the run ``mine`` (`provenance`) and fit ``n`` frames."""
    if any(part + "_fingerprint" not in g.attrs for part in mine):
        raise ValueError(f"{out} already holds /entry/fits of another run ({done} frames done) written "
                         f"by an older xmodel, without the settings it ran with; delete /entry/fits "
                         f"or choose another --out.")
    stored = {part: _json_attr(out, g, part + "_fingerprint") for part in mine}
    shown = []
    for part, now in mine.items():
        for k in differing_keys(stored[part], now):
            name = f"fit.{k}" if part == "settings" else f"{part}.{k}"
            shown.append(f"{name} (stored {stored[part].get(k, 'missing')!r}, now {now.get(k, 'missing')!r})")
    if shown:
        raise ValueError(f"{out} already holds /entry/fits of another run ({done} frames done) that "
                         f"differs in {', '.join(shown)}; rerun with the same settings to resume, "
                         f"or delete /entry/fits or choose another --out.")
    _check_layout(out, g, n)


def prepare(out: Path, n: int, source: Path, cfg, settings: FitSettings) -> int:
    """Create ``/entry/fits`` of ``n`` frames in ``out``, or check one to resume; returns the
    frames already done.

    Raises
    ------
    ValueError
        If ``out`` holds fits of another run (other reduction, frame count, config or setting)
        with frames done, naming every differing key, or fits whose progress or datasets do not
        fit ``n`` frames.
    OutputError
        If ``out`` cannot be opened for writing (`open_output`).
    """
    mine = provenance(source, n, cfg, settings)
    with open_output(out) as f:
        g = f.get(FITS)
        if g is not None and not isinstance(g, h5py.Group):
            raise ValueError(f"{out}: /{FITS} is a dataset, not the group of a scan fit; delete it or choose "
                             f"another --out.")
        if g is not None:
            done = _frames_done(out, g, n)
            if done > 0:
                _check_resume(out, g, done, n, mine)
                return done
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

    Raises
    ------
    OutputError
        If the write fails (every fit is saved; a rerun writes the maps again).
    """
    try:
        with h5py.File(out, "a") as f:
            _write_maps(f[FITS], scan)
    except OSError as err:
        raise write_failure(out, err, "the scan maps", "Every frame's fit and every neighbour pass is saved",
                            "write them") from err


def _write_maps(g: h5py.Group, scan: ReducedScan) -> None:
    """The maps of `write_maps` into the fits group ``g``."""
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
    refined = [w for w in WIDTHS if w in str(g.attrs.get("vary", "")).split(",")]
    for key in MAP_DATASETS + tuple(refined):     # a refined width is a map too (a grain's Scherrer size)
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
    with open_output(out) as f:
        if REDUCTION_GROUP not in f:
            f.require_group("entry")["reduction"] = h5py.ExternalLink(str(Path(results).resolve()), REDUCTION_GROUP)


def _checkpoint(done: int) -> str:
    kept = f"frames 0 to {done - 1} are safely written" if done else "no frame is written yet"
    return f"The checkpoint stays at frame {done} ({kept})"


def _write_rows(g: h5py.Group, start: int, stop: int, rows: dict[str, np.ndarray]) -> None:
    """Store frames ``start:stop`` of ``rows``; one place for tests to make a write fail."""
    for k, v in rows.items():
        if k in g:
            g[k][start:stop] = v


def write_batch(out: Path, start: int, stop: int, rows: dict[str, np.ndarray]) -> None:
    """Write frames ``start:stop`` and advance ``frames_done`` to ``stop`` (flushed: a checkpoint).

    Raises
    ------
    OutputError
        If the write fails (a full disk: `xmodel.outputs.write_failure`); ``frames_done`` stays
        at ``start`` and a rerun writes the batch again.
    """
    try:
        with h5py.File(out, "a") as f:
            g = f[FITS]
            _write_rows(g, start, stop, rows)
            f.flush()
            g.attrs["frames_done"] = stop
            f.flush()
    except OSError as err:
        raise write_failure(out, err, f"frames {start} to {stop - 1}", _checkpoint(start),
                            "finish the scan") from err


def write_frames(out: Path, frames: np.ndarray, values: dict[str, np.ndarray]) -> None:
    """Rewrite the rows ``frames`` of every dataset from the full-length arrays ``values`` (a
    neighbour pass), keeping the rows they replace in ``undo`` until `set_neighbour_passes_done`.

    Raises
    ------
    OutputError
        If the write fails; the next run puts the rows back (`roll_back`) and runs the pass again.
    """
    order = np.unique(np.asarray(frames, int))
    try:
        with h5py.File(out, "a") as f:
            g = f[FITS]
            _keep_undo(g, order)
            f.flush()
            _write_frame_rows(g, order, values)
            f.flush()
    except OSError as err:
        raise write_failure(out, err, f"a neighbour pass ({order.size} frames)",
                            "Every frame's fit of the main pass is saved, and the pass is put back and run "
                            "again when the run resumes", "finish the scan") from err


def _write_frame_rows(g: h5py.Group, order: np.ndarray, values: dict[str, np.ndarray]) -> None:
    """Store the rows ``order`` of the full-length ``values``; one place for tests to make a write fail."""
    for k in ALL_DATASETS:
        if k in g and k in values:
            g[k][order] = values[k][order]


def _keep_undo(g: h5py.Group, order: np.ndarray) -> None:
    """Copy the rows ``order`` of every dataset into a new record of ``undo``; the record's
    ``complete`` attribute is set last, so a half-written record is known as such."""
    u = g.require_group(UNDO)
    rec = u.create_group(str(len(u)))
    rec.create_dataset("frames", data=order)
    for k in ALL_DATASETS:
        if k in g:
            rec.create_dataset(k, data=g[k][order], dtype=g[k].dtype)
    rec.attrs["passes_done"] = int(g.attrs.get("neighbour_passes_done", 0))
    rec.attrs["complete"] = True


def roll_back(out: Path) -> int:
    """Put back the rows of a neighbour pass that was written but not recorded done (a killed or
    failed run), and drop the ``undo`` records; returns the number of frames put back."""
    with h5py.File(out, "r") as f:
        if f"{FITS}/{UNDO}" not in f:
            return 0
    try:
        with h5py.File(out, "a") as f:
            g = f[FITS]
            u = g[UNDO]
            passes = int(g.attrs.get("neighbour_passes_done", 0))
            restored: set[int] = set()
            for name in sorted(u, key=int, reverse=True):
                rec = u[name]
                if not rec.attrs.get("complete", False) or int(rec.attrs["passes_done"]) != passes:
                    continue              # half written (rows untouched), or its pass is recorded
                order = rec["frames"][()]
                for k in ALL_DATASETS:
                    if k in rec and k in g:
                        g[k][order] = rec[k][()]
                restored.update(order.tolist())
            f.flush()
            del g[UNDO]
            f.flush()
    except OSError as err:
        raise write_failure(out, err, "the rows of an unfinished neighbour pass",
                            "Nothing of that pass is recorded", "finish the scan") from err
    if restored:
        log.info("%s: put back the rows of %d frames of neighbour pass %d, which a stopped run wrote but did "
                 "not record; the pass runs again", out, len(restored), passes + 1)
    return len(restored)


def progress(out: Path) -> tuple[int, int]:
    """``(frames_done, neighbour_passes_done)`` of the fits in ``out``."""
    with h5py.File(out, "r") as f:
        a = f[FITS].attrs
        return int(a["frames_done"]), int(a.get("neighbour_passes_done", 0))


def changed_frames(out: Path) -> list[int] | None:
    """The frames the last recorded neighbour pass changed (where the next pass looks), None
    before the first pass (or for fits of an earlier version: every frame is looked at)."""
    with h5py.File(out, "r") as f:
        a = f[FITS].attrs
        if int(a.get("neighbour_passes_done", 0)) == 0 or "neighbour_changed" not in a:
            return None
        return [int(i) for i in json.loads(a["neighbour_changed"])]


def set_neighbour_passes_done(out: Path, k: int, changed: list[int] | None = None) -> None:
    """Record that ``k`` neighbour passes are done and the frames the last one ``changed``, then
    drop the rows kept for a roll back (in that order: a kill in between keeps the pass)."""
    try:
        with h5py.File(out, "a") as f:
            g = f[FITS]
            g.attrs["neighbour_passes_done"] = int(k)
            g.attrs["neighbour_changed"] = json.dumps(sorted(int(i) for i in (changed or ())))
            f.flush()
            if UNDO in g:
                del g[UNDO]
            f.flush()
    except OSError as err:
        raise write_failure(out, err, f"the progress of neighbour pass {k}",
                            "Every frame's fit of the main pass is saved, and the pass is put back and run "
                            "again when the run resumes", "finish the scan") from err


def second_grains_done(out: Path) -> bool:
    """True when the neighbour-grain mixed test (`fits.scan.second_grain.flag_second_grains`) ran on ``out``."""
    with h5py.File(out, "r") as f:
        return bool(f[FITS].attrs.get("second_grains_done", False))


def set_second_grains_done(out: Path) -> None:
    """Record that the neighbour-grain mixed test ran, then drop the rows kept for a roll back."""
    try:
        with h5py.File(out, "a") as f:
            g = f[FITS]
            g.attrs["second_grains_done"] = True
            f.flush()
            if UNDO in g:
                del g[UNDO]
            f.flush()
    except OSError as err:
        raise write_failure(out, err, "the progress of the neighbour-grain mixed test",
                            "Every frame's fit is saved, and the test is run again when the run resumes",
                            "finish the scan") from err


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


def editable_rows(r: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Copies of the per-frame arrays of ``r`` (`read_fits`) to change rows of and write back
    (`write_frames`): strings as object arrays, so that a longer message fits."""
    return {k: (v.astype(object) if v.dtype.kind == "U" else v.copy()) for k, v in r.items()
            if isinstance(v, np.ndarray)}


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
