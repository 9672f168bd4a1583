"""Small writers of NeXus structure, so that silx view, h5web and NeXpy plot xmodel's files.

One place spells the NeXus conventions that every xmodel output follows:

- every group has an ``NX_class``; the root carries ``NX_class = NXroot``, ``creator``,
  ``file_time`` and a ``default`` attribute that leads, group by group, to the main plot;
- plots are ``NXdata`` groups with ``signal``, ``axes`` (one name per dimension, ``"."`` where
  a dimension has no axis) and ``<axis>_indices``; every field has a ``units`` attribute with
  a unit string (``"counts"``, ``"1/angstrom"``, ``"degree"``, ``"um"``, ``"m"``, ``"rad"``)
  and a ``long_name`` for axis labels;
- an ``NXprocess`` records the program, its version, the date, the configs used and the
  environment that computed it (Python, numpy, h5py and, where the process uses JAX, its version,
  backend and devices: a GPU's patterns differ from a CPU's by about 5e-4 of their maximum).

References: NeXus v2024.02, base classes NXroot, NXentry, NXdata, NXprocess, NXnote
(https://manual.nexusformat.org/classes/base_classes/), and the "default" and "signal/axes"
plotting conventions (https://manual.nexusformat.org/datarules.html#design-findplottable-niac2014).
Validation: silx ``silx.io.nxdata.is_valid_nxdata`` and ``get_default`` (tests/xmodel/test_nexus.py).
"""
from __future__ import annotations

import datetime as _dt
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

PROGRAM = "xmodel"


def _now() -> str:
    """The current time as ISO 8601 with the UTC offset (NeXus NX_DATE_TIME)."""
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _version() -> str:
    from xmodel import __version__

    return __version__


def init_root(f: h5py.File) -> None:
    """NXroot attributes of an open file: ``NX_class``, ``creator``, ``file_name``, ``file_time``."""
    f.attrs["NX_class"] = "NXroot"
    f.attrs["creator"] = f"{PROGRAM} {_version()}"
    f.attrs["file_name"] = str(Path(f.filename).resolve())
    f.attrs["file_time"] = _now()
    f.attrs["HDF5_Version"] = h5py.version.hdf5_version


def require_group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    """``parent[name]`` (created if missing) with its ``NX_class``."""
    grp = parent.require_group(name)
    grp.attrs["NX_class"] = nx_class
    return grp


def create_entry(f: h5py.File, name: str = "entry", *, title: str | None = None) -> h5py.Group:
    """An NXentry in an open file (NXroot attributes set; the root's default if it has none)."""
    if "NX_class" not in f.attrs:
        init_root(f)
    entry = require_group(f, name, "NXentry")
    if "default" not in f.attrs:
        f.attrs["default"] = name
    if title is not None:
        _replace(entry, "title", title)
    return entry


def _replace(grp: h5py.Group, name: str, data, **kwargs) -> h5py.Dataset:
    if name in grp:
        del grp[name]
    return grp.create_dataset(name, data=data, **kwargs)


def write_field(grp: h5py.Group, name: str, data, *, units: str | None = None, long_name: str | None = None,
                description: str | None = None, compress: bool = False) -> h5py.Dataset:
    """A field with ``units``/``long_name``/``description`` attributes (replaced if present).

    ``units`` is a unit string (UDUNITS, as NeXus asks); leave it None for dimensionless
    quantities and labels.
    """
    data = np.asarray(data)
    opts = dict(compression="gzip", compression_opts=4, chunks=True) if compress and data.ndim >= 2 else {}
    ds = _replace(grp, name, data, **opts)
    if units is not None:
        ds.attrs["units"] = units
    if long_name is not None:
        ds.attrs["long_name"] = long_name
    if description is not None:
        ds.attrs["description"] = description
    return ds


def create_nxdata(parent: h5py.Group, name: str, signal: str, data, *,
                  axes: Sequence[tuple[str, np.ndarray, str | None, str] | None] = (),
                  units: str | None = None, long_name: str | None = None, title: str | None = None,
                  auxiliary: Mapping[str, tuple[np.ndarray, str | None, str]] | None = None,
                  compress: bool = True) -> h5py.Group:
    """An NXdata group with a signal, its axes and their ``*_indices``.

    Parameters
    ----------
    parent : group to create it in (replaced if it exists).
    name : group name; signal : name of the signal field; data : its values.
    axes : one entry per dimension of ``data``: ``(name, values, units, long_name)`` with
        ``values`` of that dimension's length, or None (no axis, ``"."``).
    units, long_name : of the signal.
    title : the plot title.
    auxiliary : more signals of the same shape, name -> (values, units, long_name); they are
        listed in ``auxiliary_signals`` (silx view offers them in the same plot).

    Returns
    -------
    The NXdata group.
    """
    data = np.asarray(data)
    axes = list(axes) or [None] * data.ndim
    if len(axes) != data.ndim:
        raise ValueError(f"NXdata {name!r}: {len(axes)} axes for a {data.ndim}-dimensional signal {signal!r}")
    if name in parent:
        del parent[name]
    grp = require_group(parent, name, "NXdata")
    write_field(grp, signal, data, units=units, long_name=long_name, compress=compress)
    grp.attrs["signal"] = signal
    names = []
    for dim, ax in enumerate(axes):
        if ax is None:
            names.append(".")
            continue
        ax_name, values, ax_units, ax_long = ax
        values = np.asarray(values)
        if values.shape != (data.shape[dim],):
            raise ValueError(f"NXdata {name!r}: axis {ax_name!r} has shape {values.shape}, dimension {dim} "
                             f"of {signal!r} has length {data.shape[dim]}")
        write_field(grp, ax_name, values, units=ax_units, long_name=ax_long)
        grp.attrs[f"{ax_name}_indices"] = np.int32(dim)
        names.append(ax_name)
    grp.attrs["axes"] = np.array(names, dtype=h5py.string_dtype())
    if auxiliary:
        for aux, (values, aux_units, aux_long) in auxiliary.items():
            values = np.asarray(values)
            if values.shape != data.shape:
                raise ValueError(f"NXdata {name!r}: auxiliary signal {aux!r} has shape {values.shape}, "
                                 f"the signal {data.shape}")
            write_field(grp, aux, values, units=aux_units, long_name=aux_long, compress=compress)
        grp.attrs["auxiliary_signals"] = np.array(list(auxiliary), dtype=h5py.string_dtype())
    if title is not None:
        _replace(grp, "title", title)
    return grp


@dataclass(frozen=True)
class GridLayout:
    """Frames on a `xmodel.positions.ScanGrid`, placed by the grid's own step and origin: the
    layout `create_scan_map` takes where no reduced scan is at hand (a twin's truth).

    Attributes
    ----------
    grid : the `xmodel.positions.ScanGrid` (None: the frames lie on no grid, plotted per frame).
    """

    grid: object | None

    def map_axes(self) -> list[tuple[str, np.ndarray, str | None, str]]:
        """Rows y and columns x (um) of the grid (an axis with one point sits at its origin), or
        the scan row and column indices when the grid has no step (a scan shape without positions)."""
        rows, cols = self.grid.shape
        (step_y, step_x), (y0, x0) = self.grid.step_um, self.grid.origin_um
        if not all(np.isfinite(s) or n == 1 for s, n in ((step_y, rows), (step_x, cols))):
            return [("row", np.arange(rows), None, "scan row"), ("column", np.arange(cols), None, "scan column")]
        step_y, step_x = (s if np.isfinite(s) else 0.0 for s in (step_y, step_x))
        return [("y", y0 + step_y * np.arange(rows), "um", "y (um)"),
                ("x", x0 + step_x * np.arange(cols), "um", "x (um)")]

    def map_image(self, values: np.ndarray) -> np.ndarray:
        """Per-frame values as an image on the grid (NaN where no frame)."""
        return self.grid.image(values)


def create_scan_map(parent: h5py.Group, name: str, signal: str, values, scan, *, units: str | None = None,
                    long_name: str | None = None, title: str | None = None,
                    auxiliary: Mapping[str, tuple[np.ndarray, str | None, str]] | None = None) -> h5py.Group:
    """A scan map of per-frame values as NXdata: an image on the scan grid, or a plot per frame.

    Parameters
    ----------
    parent : group to create it in (replaced if it exists).
    name, signal : group name and signal field name.
    values : (N,) one value per frame, in the frames' order.
    scan : the reduced scan (`xmodel.reduced.ReducedScan`) or a `GridLayout`; its ``grid``,
        ``map_axes`` and ``map_image`` place every frame at its grid point: rows y and columns x
        in um (the scan row and column indices when no positions are known), NaN at grid points
        without a frame. Frames on no grid are plotted over the frame index.
    units, long_name, title : of the signal, as `create_nxdata`.
    auxiliary : more per-frame signals, name -> (values, units, long_name).

    Returns
    -------
    The NXdata group. Integer values stay integers where every grid point has a frame.
    """
    if scan.grid is None:
        axes = [("frame", np.arange(np.shape(values)[0]), None, "frame")]

        def place(v):
            return np.asarray(v)
    else:
        axes = scan.map_axes()

        def place(v):
            v = np.asarray(v)
            image = scan.map_image(v)
            if v.dtype.kind in "iub" and np.all(np.isfinite(image)):
                return image.astype(v.dtype)
            return image
    aux = {k: (place(v), u, ln) for k, (v, u, ln) in (auxiliary or {}).items()}
    return create_nxdata(parent, name, signal, place(values), axes=axes, units=units, long_name=long_name,
                         title=title, auxiliary=aux or None)


def set_default(nxdata: h5py.Group, *, overwrite: bool = True) -> None:
    """Point the ``default`` attributes from the file root down to ``nxdata``.

    With ``overwrite=False`` a group that already names a default keeps it (another writer's
    main plot stays the main plot) and the chain stops there.
    """
    child = nxdata
    while child.parent.name != child.name:          # the root is its own parent
        parent = child.parent
        if not overwrite and "default" in parent.attrs:
            return
        parent.attrs["default"] = child.name.rsplit("/", 1)[-1]
        child = parent


def write_process(parent: h5py.Group, name: str = "process", *, program: str = PROGRAM,
                  configs: Sequence[str | Path] = (), resolved_config: Mapping | None = None,
                  parameters: Mapping[str, object] | None = None) -> h5py.Group:
    """An NXprocess: program, version, date, command line, the configs used and the environment
    (`environment`, JSON).

    Parameters
    ----------
    program : e.g. ``"xmodel simulate"``.
    configs : TOML files read; each is stored as an NXnote (file name and text).
    resolved_config : the merged configuration (stored as JSON in ``resolved_config``).
    parameters : further settings of the run (stored as JSON in ``parameters``).
    """
    if name in parent:
        del parent[name]
    return describe_process(parent.create_group(name), program=program, configs=configs,
                            resolved_config=resolved_config, parameters=parameters)


def environment() -> dict[str, object]:
    """The software and devices of this process: Python, numpy, h5py and, if JAX is imported,
    its version, default backend and devices (``jax.devices()``; JAX is not imported here)."""
    import platform

    env: dict[str, object] = {"python": platform.python_version(), "numpy": np.__version__,
                              "h5py": h5py.version.version}
    jax = sys.modules.get("jax")
    if jax is not None:
        env["jax"] = jax.__version__
        env["jax_backend"] = jax.default_backend()
        env["jax_devices"] = [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
    return env


def describe_process(proc: h5py.Group, *, program: str = PROGRAM, configs: Sequence[str | Path] = (),
                     resolved_config: Mapping | None = None,
                     parameters: Mapping[str, object] | None = None) -> h5py.Group:
    """Make an existing group an NXprocess with the fields of `write_process`."""
    proc.attrs["NX_class"] = "NXprocess"
    _replace(proc, "program", program)
    _replace(proc, "version", _version())
    _replace(proc, "date", _now())
    _replace(proc, "environment", json.dumps(environment(), indent=1))
    _replace(proc, "command_line", " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "")
    for k, path in enumerate(configs):
        path = Path(path)
        note = require_group(proc, f"config_{k}", "NXnote")
        _replace(note, "file_name", str(path.resolve()))
        _replace(note, "type", "application/toml")
        _replace(note, "data", path.read_text() if path.is_file() else "")
    if resolved_config is not None:
        _replace(proc, "resolved_config", json.dumps(resolved_config, indent=1, default=str))
    if parameters is not None:
        _replace(proc, "parameters", json.dumps(parameters, indent=1, default=str))
    return proc
