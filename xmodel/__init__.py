"""xmodel: a differentiable forward model of scanning X-ray nanodiffraction of nanocrystal superlattices.

The public entry points are re-exported here; see README.md and docs/. They are imported on
first use (PEP 562 module ``__getattr__``), so that ``import xmodel`` and the command line's
``--help`` do not pay for importing JAX.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "sphere_form_factor": "xmodel.form_factor",
    "Geometry": "xmodel.geometry",
    "ModelParams": "xmodel.parameters",
    "Structure": "xmodel.parameters",
    "make_params": "xmodel.parameters",
    "params_from_config": "xmodel.parameters",
    "structure_from_config": "xmodel.parameters",
    "PatternModel": "xmodel.pattern",
    "build_support": "xmodel.pattern",
    "dense_pattern": "xmodel.pattern",
    "PixelSet": "xmodel.pixels",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xmodel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
