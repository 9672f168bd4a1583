"""Test configuration: float64 available for gradient checks, persistent JAX compilation cache."""
import os
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
_cache = Path(os.environ.get("XMODEL_JAX_CACHE", Path(__file__).resolve().parents[1] / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", str(_cache))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
