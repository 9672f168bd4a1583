"""Fit parameters, declared once in a table (sasmodels style).

Each row of `PARAMETER_TABLE` names one scalar fit parameter in edge units (A, 1/A, degrees
with ``_deg`` in the name, counts) and says which `xmodel.parameters.ModelParams` field it
fills and how its value converts to the model's internal units (``internal = edge *
to_internal``). The same table yields lmfit `Parameters` (`to_lmfit`, `from_lmfit`) and the
jit-able, differentiable map between a flat edge-unit vector and the pytree (`pack`,
`unpack`) used by the Jacobians and the batched least squares.

Notation table (docs/conventions.md):

==================  ==========  ===================================================
edge name           units       ModelParams field (internal units)
==================  ==========  ===================================================
lattice_constant    A           lattice_constant (A)
mosaic_deg          deg         sl_mosaic (rad)
disorder_deg        deg FWHM    disorder = sigma_Phi (rad) = dPhi / 2.3548 (Eq. 7)
inplane_deg, ...    deg         inplane, tilt1, tilt2 (rad)
mis1..3_deg         deg         misorientation[0..2] (rad)
==================  ==========  ===================================================
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from xmodel.parameters import FWHM_PER_SIGMA, ModelParams

_DEG = math.pi / 180.0


@dataclass(frozen=True)
class ParamSpec:
    """One fit parameter.

    Attributes
    ----------
    name : edge name (``_deg`` suffix for angles in degrees).
    units : edge units, as written in reports and HDF5 ``units`` attributes.
    default : default value (edge units), the forward model's default.
    min, max : default bounds (edge units; ``-inf``/``inf`` for none).
    vary : whether the parameter varies by default.
    description : one line for reports and docs.
    field : the `ModelParams` field it fills.
    index : component of a vector field (``misorientation``), else None.
    to_internal : factor from edge to internal units (``internal = edge * to_internal``).
    floor : ``min`` is the parameter's physical floor (a peak width: zero, or as good as zero
        next to the detector's resolution). A fit that ends there has measured the width as
        unresolved, a value like any other, not run into a limit of the search: `floor_hits`.
    """

    name: str
    units: str
    default: float
    min: float
    max: float
    vary: bool
    description: str
    field: str
    index: int | None = None
    to_internal: float = 1.0
    floor: bool = False


_INF = math.inf

#: every fit parameter, in the order used by `to_lmfit`, reports and results files
PARAMETER_TABLE: tuple[ParamSpec, ...] = (
    ParamSpec("lattice_constant", "A", 150.0, 100.0, 250.0, True,
              "SL cubic lattice constant a", "lattice_constant"),
    ParamSpec("sl_radial_width", "1/A", 0.0015, 1e-5, 0.02, False,
              "radial Gaussian sigma of SL peaks", "sl_radial_width", floor=True),
    ParamSpec("mosaic_deg", "deg", 1.0, 0.01, 20.0, False,
              "SL mosaic spread (tangential sigma of SL peaks is |G| times this)", "sl_mosaic",
              to_internal=_DEG, floor=True),
    ParamSpec("sl_scale", "counts", 5.0e3, 0.0, _INF, True,
              "SL peak height at P(q) = 1, per pixel at unit solid angle", "sl_scale"),
    ParamSpec("diffuse_scale", "counts", 50.0, 0.0, _INF, True,
              "isotropic diffuse SAXS term diffuse_scale * P(|q|)", "diffuse_scale"),
    ParamSpec("radius", "A", 34.0, 5.0, 100.0, False,
              "mean NC core radius", "radius"),
    ParamSpec("radius_sigma", "A", 2.5, 0.1, 20.0, False,
              "standard deviation of the NC core radius", "radius_sigma"),
    ParamSpec("al_scale", "counts", 20.0, 0.0, _INF, True,
              "height of the 200 AL peak per pixel at unit solid angle", "al_scale"),
    ParamSpec("al_radial_width", "1/A", 0.039, 1e-3, 0.3, False,
              "Scherrer radial sigma of AL peaks", "al_radial_width", floor=True),
    ParamSpec("disorder_deg", "deg", 15.0, 0.0, 90.0, True,
              "NC orientational disorder dPhi (FWHM, Eq. 7)", "disorder",
              to_internal=_DEG / FWHM_PER_SIGMA),
    ParamSpec("inplane_deg", "deg", 0.0, -180.0, 180.0, True,
              "SL in-plane rotation about the beam (e3)", "inplane", to_internal=_DEG),
    ParamSpec("tilt1_deg", "deg", 0.0, -15.0, 15.0, True,
              "SL out-of-plane tilt about e1", "tilt1", to_internal=_DEG),
    ParamSpec("tilt2_deg", "deg", 0.0, -15.0, 15.0, True,
              "SL out-of-plane tilt about e2", "tilt2", to_internal=_DEG),
    ParamSpec("mis1_deg", "deg", 0.0, -15.0, 15.0, False,
              "NC misorientation rotation vector, component 1 (SL crystal frame)",
              "misorientation", 0, _DEG),
    ParamSpec("mis2_deg", "deg", 0.0, -15.0, 15.0, False,
              "NC misorientation rotation vector, component 2", "misorientation", 1, _DEG),
    ParamSpec("mis3_deg", "deg", 0.0, -15.0, 15.0, False,
              "NC misorientation rotation vector, component 3", "misorientation", 2, _DEG),
    ParamSpec("background", "counts", 0.05, 0.0, _INF, True,
              "constant background per pixel at unit solid angle", "background"),
)

NAMES: tuple[str, ...] = tuple(s.name for s in PARAMETER_TABLE)
_BY_NAME = {s.name: s for s in PARAMETER_TABLE}


def spec(name: str) -> ParamSpec:
    """The table row of fit parameter ``name``.

    Raises
    ------
    KeyError
        If ``name`` is not in `PARAMETER_TABLE`; the message lists the valid names.
    """
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        hint = ""
        if isinstance(name, str) and name + "_deg" in _BY_NAME:
            hint = f" Perhaps you meant {name + '_deg'!r} (angles are in degrees at the edges)?"
        raise KeyError(f"unknown fit parameter {name!r}; valid names are {list(NAMES)}.{hint}") from None


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple after checking each one and refusing repeats (`spec` errors)."""
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    for n in names:
        spec(n)
    seen = set()
    for n in names:
        if n in seen:
            raise ValueError(f"fit parameter {n!r} is listed twice in {list(names)}; list each name once")
        seen.add(n)
    return names


def floor_hits(names: Sequence[str], x: np.ndarray, lo: np.ndarray, hi: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Which fitted values lie on a bound: (limits, floors), two bool arrays shaped like ``x``.

    ``x`` (..., len(names)) edge-unit values, ``lo``/``hi`` (len(names),) their bounds. A value
    on the lower bound of a parameter whose table row has ``floor`` (a peak width) counts as a
    floor: the fit measured the width as unresolved, and its status is not "at a bound" for
    it. Every other value on a finite bound counts as a limit (`FitStatus.AT_BOUND`): the
    data would have taken the fit further than it was allowed to go.
    """
    x = np.asarray(x, np.float64)
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    on_lo = np.isclose(x, lo) & np.isfinite(lo)
    on_hi = np.isclose(x, hi) & np.isfinite(hi)
    floor = np.array([spec(n).floor for n in names], bool)
    return (on_lo & ~floor) | on_hi, on_lo & floor


def floor_note(names: Sequence[str]) -> str:
    """The sentence a fit's message gains for the widths ``names`` on their floor ('' for none)."""
    return f"; unresolved (at their floor): {', '.join(names)}" if len(names) else ""


def check_bounds(bounds: dict[str, tuple[float, float]] | None, varying: Sequence[str] | None = None,
                 owner: str = "") -> dict[str, tuple[float, float]]:
    """User bounds ``{name: (min, max)}`` (edge units) as floats, after checking them.

    ``varying``: if given, bounds for any other name are refused (a fixed parameter has no
    bounds); ``owner`` is named in that message (e.g. ``"this fit "``).

    Raises
    ------
    KeyError
        For a name not in the table (`spec`).
    ValueError
        For bounds of a parameter not in ``varying``, or that are not a (min < max) pair.
    """
    out = {}
    for n, b in dict(bounds or {}).items():
        spec(n)
        if varying is not None and n not in varying:
            raise ValueError(f"bounds given for {n!r}, which {owner}does not vary (it varies {list(varying)}); "
                             "add it to vary or drop its bounds")
        try:
            lo, hi = (float(v) for v in b)
        except (TypeError, ValueError):
            raise ValueError(f"bounds[{n!r}] = {b!r} is not a (min, max) pair of numbers; "
                             "write e.g. bounds={'lattice_constant': (140.0, 160.0)}") from None
        if not lo < hi:
            raise ValueError(f"bounds[{n!r}] = {b!r} needs min < max; swap or widen them")
        out[n] = (lo, hi)
    return out


def parameter_bounds(names: Sequence[str], bounds: dict[str, tuple[float, float]] | None = None,
                     owner: str = "") -> dict[str, tuple[float, float]]:
    """``{name: (min, max)}`` (edge units) for the varying ``names``: the table's rows, replaced
    by ``bounds`` where given (`check_bounds`; one source of bounds, `PARAMETER_TABLE`)."""
    names = tuple(names)
    given = check_bounds(bounds, names, owner)
    return {n: given.get(n, (spec(n).min, spec(n).max)) for n in names}


def _component(params: ModelParams, s: ParamSpec):
    x = jnp.asarray(getattr(params, s.field))
    return x if s.index is None else x[..., s.index]


def edge_value(params: ModelParams, name: str) -> np.ndarray:
    """Value of fit parameter ``name`` in edge units (numpy; keeps any batch axes)."""
    s = spec(name)
    return np.asarray(_component(params, s), np.float64) / s.to_internal


def pack(params: ModelParams, names: Sequence[str]) -> jnp.ndarray:
    """Edge-unit vector of the named parameters, shape ``batch + (len(names),)``.

    Jit-able and differentiable; ``params`` may carry leading batch axes (stacked pytree).
    """
    cols = [_component(params, spec(n)) / spec(n).to_internal for n in names]
    return jnp.stack(cols, axis=-1)


def unpack(vector, names: Sequence[str], template: ModelParams) -> ModelParams:
    """`ModelParams` equal to ``template`` with the named parameters set from ``vector``.

    Parameters
    ----------
    vector : (..., len(names)) values in edge units (see `PARAMETER_TABLE`).
    names : fit parameter names, in the order of the last axis of ``vector``.
    template : parameters supplying every other field; its leaves keep their dtypes. Leading
        batch axes of ``vector`` and ``template`` must match (or template is unbatched for a
        scalar-per-field result under `jax.vmap`).

    Notes
    -----
    ``internal = edge * to_internal`` per row; jit-able and differentiable.
    Validation: ``pack(unpack(v)) == v`` and field values checked in tests/fits/test_parameters.py.
    """
    vector = jnp.asarray(vector)
    changes: dict[str, jnp.ndarray] = {}
    for i, n in enumerate(names):
        s = spec(n)
        dtype = jnp.asarray(getattr(template, s.field)).dtype
        value = (vector[..., i] * s.to_internal).astype(dtype)
        if s.index is None:
            changes[s.field] = value
        else:
            current = changes.get(s.field, jnp.asarray(getattr(template, s.field)))
            current = jnp.broadcast_to(current, value.shape + (current.shape[-1],))
            changes[s.field] = current.at[..., s.index].set(value)
    return dataclasses.replace(template, **changes)


def to_lmfit(params: ModelParams, vary: Sequence[str] | None = None,
             bounds: dict[str, tuple[float, float]] | None = None):
    """lmfit `Parameters` holding every table parameter at its value in ``params`` (edge units).

    Parameters
    ----------
    params : one pattern's parameters (internal units).
    vary : names that vary (the others are fixed); None uses the table's ``vary`` column.
    bounds : ``{name: (min, max)}`` in edge units replacing the table's bounds (use
        ``-numpy.inf``/``numpy.inf`` for none).

    Raises
    ------
    KeyError
        For a name not in the table. ValueError for bounds that are not (min < max) pairs or
        that exclude the value of ``params``.
    """
    import lmfit

    vary_set = {s.name for s in PARAMETER_TABLE if s.vary} if vary is None else set(check_names(vary))
    bounds = check_bounds(bounds)
    lp = lmfit.Parameters()
    for s in PARAMETER_TABLE:
        if np.asarray(_component(params, s)).size != 1:
            raise ValueError(f"to_lmfit needs the parameters of one pattern, but {s.field!r} has shape "
                             f"{np.shape(getattr(params, s.field))}; index the batch first")
        value = float(np.asarray(_component(params, s), np.float64).reshape(-1)[0]) / s.to_internal
        lo, hi = (float(v) for v in bounds.get(s.name, (s.min, s.max)))
        if not lo <= value <= hi:
            raise ValueError(f"the starting value of {s.name} = {value:.6g} {s.units} lies outside its "
                             f"bounds [{lo:.6g}, {hi:.6g}]; move the start inside or pass wider "
                             f"bounds={{{s.name!r}: (min, max)}}")
        lp.add(s.name, value=value, min=lo, max=hi, vary=s.name in vary_set)
    return lp


def from_lmfit(lp, template: ModelParams) -> ModelParams:
    """`ModelParams` from lmfit `Parameters` (edge units) on top of ``template``.

    Only table parameters present in ``lp`` are taken; other fields come from ``template``.
    """
    names = [n for n in NAMES if n in lp]
    vector = np.array([float(lp[n].value) for n in names], np.float64)
    return unpack(vector, names, template)


def table_markdown() -> str:
    """The parameter table as a Markdown table (for docs/); "(floor)" marks a minimum that is the
    parameter's physical floor (`ParamSpec.floor`)."""
    lines = ["| name | units | default | min | max | varies | ModelParams field | description |",
             "|---|---|---|---|---|---|---|---|"]
    for s in PARAMETER_TABLE:
        field = s.field if s.index is None else f"{s.field}[{s.index}]"
        low = f"{s.min:g} (floor)" if s.floor else f"{s.min:g}"
        lines.append(f"| `{s.name}` | {s.units} | {s.default:g} | {low} | {s.max:g} | "
                     f"{'yes' if s.vary else 'no'} | `{field}` | {s.description} |")
    return "\n".join(lines) + "\n"
