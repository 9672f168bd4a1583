"""The ``/entry/classification`` group of a reduced scan: where `xmodel classify` writes the
domain classes of every frame and where the other commands read them.

Layout (NeXus; `xmodel.nexus`):

* ``/entry/classification`` (NXprocess: program, version, date, the settings as JSON in
  ``parameters``) with the attributes ``class_names`` and ``class_colors`` (JSON), ``labels``
  (the code below) and ``method``;
* per-frame datasets in the frames' order, each with a ``description``: ``label``,
  ``saxs_label``, ``waxs_label`` (int32: class index into ``class_names``, -1 empty, -2 mixed,
  -3 no data), ``confidence``, ``saxs_confidence``, ``waxs_confidence`` (0..1), optionally
  ``label_source`` and ``orientation_label``;
* ``map`` (NXdata): ``label`` as an image over the scan positions, rows ``y`` and columns ``x``
  in um (`xmodel.nexus.create_scan_map`), the confidences and ring labels as auxiliary
  signals. The file's ``default`` chain leads to it: the last analysis written is what a
  viewer opens.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

GROUP = "/entry/classification"
#: per-frame labels of the point classes, the dataset `--domain NAME` selects frames of
LABEL = f"{GROUP}/label"
#: the meaning of the integer labels (the group's ``labels`` attribute)
LABEL_CODES = ("class index >= 0 into class_names; -1 empty (no peaks); -2 mixed; "
               "-3 no data (ring masked in that frame)")

DESCRIPTIONS = {
    "saxs_label": "class from the SL ring at q = 0.083 1/A",
    "waxs_label": "class from the AL ring at q = 2.12 1/A",
    "label": "point label from both rings (fits.analyses.classify.combine_rings; cluster templates: SAXS "
             "class, WAXS class where SAXS is empty)",
    "confidence": "dominant share of the fitted peak intensity times the fit quality: R^2 of the SAXS fit, "
                  "(1 - 1/z) of the WAXS Poisson significance z",
    "saxs_confidence": "as confidence, SL ring",
    "waxs_confidence": "as confidence, AL ring",
    "orientation_label": "class of the fitted SL orientation (cubic misorientation)",
    "label_source": "3 both rings agree, 1 SAXS only, 2 WAXS only (no SL peaks), 0 empty, -1 rings disagree",
}


def write_classification(path: str | Path, scan, names: list[str], colors: list[str],
                         labels: Mapping[str, np.ndarray], confidences: Mapping[str, np.ndarray], *,
                         parameters: Mapping[str, object], method: str) -> Path:
    """Write ``/entry/classification`` (replaced if present) into the reduced scan ``path``.

    Parameters
    ----------
    path : the reduced scan (HDF5, appended to).
    scan : its `xmodel.reduced.ReducedScan` (the map's grid and positions).
    names, colors : class names and their colours (index k -> ``names[k]``).
    labels : per-frame integer datasets by name: ``label``, ``saxs_label``, ``waxs_label`` and
        optionally ``orientation_label``, ``label_source`` (keys of `DESCRIPTIONS`).
    confidences : per-frame confidences (0..1) by name: ``confidence``, ``saxs_confidence``,
        ``waxs_confidence``.
    parameters : the settings of the run (stored as JSON in the NXprocess).
    method : one line on the method (rings, templates, thresholds).

    Returns
    -------
    Path
        ``path``.
    """
    from xmodel import nexus

    unknown = sorted((set(labels) | set(confidences)) - set(DESCRIPTIONS))
    if unknown:
        raise ValueError(f"classification datasets {unknown} are not in the schema; known: {sorted(DESCRIPTIONS)}")
    if "label" not in labels:
        raise ValueError("the classification needs the per-frame 'label' dataset (the map's signal)")
    with h5py.File(path, "a") as f:
        if GROUP in f:
            del f[GROUP]
        entry = nexus.create_entry(f)
        g = entry.create_group(GROUP.rsplit("/", 1)[-1])
        nexus.describe_process(g, program="xmodel classify", parameters=dict(parameters))
        g.attrs["class_names"] = json.dumps(list(names))
        g.attrs["class_colors"] = json.dumps(list(colors))
        g.attrs["labels"] = LABEL_CODES
        g.attrs["method"] = method
        for key, values in labels.items():
            g.create_dataset(key, data=np.asarray(values, np.int32)).attrs["description"] = DESCRIPTIONS[key]
        for key, values in confidences.items():
            g.create_dataset(key, data=np.asarray(values, np.float64)).attrs["description"] = DESCRIPTIONS[key]
        aux = {k: (np.asarray(v, np.int32), None, k.replace("_", " ")) for k, v in labels.items() if k != "label"}
        aux.update({k: (np.asarray(v, np.float64), None, k.replace("_", " ")) for k, v in confidences.items()})
        m = nexus.create_scan_map(g, "map", "label", np.asarray(labels["label"], np.int32), scan,
                                  long_name="domain class (-1 empty, -2 mixed, -3 no data)",
                                  title="domain classes", auxiliary=aux)
        m.attrs["class_names"] = json.dumps(list(names))
        nexus.set_default(m)
    return Path(path)
