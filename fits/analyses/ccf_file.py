"""The NeXus file of a cross-correlation function (``xmodel ccf --out FILE``).

Layout (`xmodel.nexus`): ``/entry/ccf`` (NXprocess: program, version, date, the input, rings and
frames as JSON in ``parameters``, the configs of the forward model as NXnote) holding the NXdata
``ccf``: the CCF ``C(q1, q2, Delta)`` (Eq. 3, scaled 0..1) over ``delta_deg``, with the
forward-model and Gaussian-peak CCFs (Eqs. 4-6) as auxiliary signals when they were computed,
and ``maxima_deg`` (the angles of its maxima). The file's ``default`` chain leads to the NXdata.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

GROUP = "/entry/ccf"


def write_ccf(path: str | Path, delta_deg: np.ndarray, ccf: np.ndarray, maxima_deg: np.ndarray, *,
              simulated: Mapping[str, np.ndarray] | None = None, parameters: Mapping[str, object],
              configs: Sequence[str | Path] = ()) -> Path:
    """Write the CCF of two rings to a new NeXus file ``path`` (replaced if present).

    Parameters
    ----------
    delta_deg : (M,) angle between the two rings' azimuths (deg).
    ccf : (M,) the measured (or simulated-input) CCF, scaled 0..1.
    maxima_deg : angles of the CCF maxima (deg).
    simulated : ``{"ccf_simulated": (M,), "ccf_gaussian": (M,)}``: the forward-model and
        Gaussian-peak CCFs on the same angles, or None.
    parameters : input file, rings (q1, q2, dq1, dq2 in 1/A), frames and scores (JSON).
    configs : TOML files of the forward model (stored as NXnote).

    Returns
    -------
    Path
        ``path``.
    """
    from xmodel import nexus

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        entry = nexus.create_entry(f, title="xmodel ccf: cross-correlation function of two rings")
        g = nexus.describe_process(entry.create_group(GROUP.rsplit("/", 1)[-1]), program="xmodel ccf",
                                   configs=configs, parameters=dict(parameters))
        aux = {k: (np.asarray(v, float), None, k.replace("_", " ")) for k, v in (simulated or {}).items()}
        nx = nexus.create_nxdata(g, "ccf", "ccf", np.asarray(ccf, float), long_name="C(q1, q2, Delta), scaled",
                                 axes=[("delta_deg", np.asarray(delta_deg, float), "degree", "Delta (deg)")],
                                 title="cross-correlation function (Eq. 3)", auxiliary=aux or None, compress=False)
        nexus.write_field(g, "maxima_deg", np.asarray(maxima_deg, float), units="degree",
                          description="angles Delta of the CCF maxima")
        nexus.set_default(nx)
    return path
