"""xmodel: a differentiable forward model of scanning X-ray nanodiffraction of nanocrystal superlattices.

The public entry points are re-exported here; see README.md and docs/.
"""
from xmodel.form_factor import sphere_form_factor
from xmodel.geometry import Geometry
from xmodel.parameters import ModelParams, Structure, make_params, params_from_config, structure_from_config
from xmodel.pattern import PatternModel, build_support, dense_pattern
from xmodel.pixels import PixelSet

__all__ = [
    "Geometry", "ModelParams", "PatternModel", "PixelSet", "Structure", "build_support",
    "dense_pattern", "make_params", "params_from_config", "sphere_form_factor", "structure_from_config",
]
__version__ = "0.1.0"
