"""Tests of fits/scan/settings.py: one place for every tuning number, the [fit] table, the CLI."""
import dataclasses

import pytest

from fits.scan.settings import (FIT_CLI_KEYS, GROUPS, FitSettings, default_of, describe, differing_keys,
                                key_index, settings_from_config)
from xmodel.cli import build_parser
from xmodel.config import default_paths, load_config


def test_every_setting_has_a_unit_or_reason_and_a_unique_flat_key():
    names = [f.name for cls in GROUPS.values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names)) == len(key_index())
    for key, group, default, unit, reason in describe():
        assert reason, key
    assert FitSettings().refine.max_iter == 15 and FitSettings().neighbours.replace_margin == 10.0


def test_flat_keys_replace_values_and_bad_values_are_refused():
    s = FitSettings.of(neighbour_passes=0, a_range_rel=[0.9, 1.1], conf_margin="inf")
    assert s.neighbours.neighbour_passes == 0 and s.support.a_range_rel == (0.9, 1.1)
    assert s.refine.conf_margin == float("inf")
    assert FitSettings.of(cache_dir="").run.cache_dir is None
    with pytest.raises(ValueError, match=r"fit\.step_deg = 0 \(an integer\) in FitSettings.of: expected a finite "
                                         r"number >= 0\.5 and <= 10 \(deg\); the default is 1\.5"):
        FitSettings.of(step_deg=0)
    with pytest.raises(ValueError, match=r"unknown fit setting 'neighbour_pass' .* "
                                         r"Did you mean fit\.neighbour_passes\?"):
        FitSettings.of(neighbour_pass=1)
    with pytest.raises(ValueError, match=r"fit\.max_iter = 2\.5 .* expected an integer >= 1"):
        FitSettings.of(max_iter=2.5)
    with pytest.raises(ValueError, match=r"unknown fit status names \['done'\]"):
        FitSettings.of(line_preference=[["ok"], ["done"]])


def test_a_fit_table_and_set_fit_key_change_the_settings(tmp_path):
    toml = tmp_path / "fit.toml"
    toml.write_text("[fit]\nmax_iter = 25\nmixed_ratio = 0.3\n")
    cfg = load_config([*default_paths("red"), toml], ["fit.neighbour_passes=0", "fit.mixed_ratio=0.25"])
    s = settings_from_config(cfg)
    assert (s.refine.max_iter, s.neighbours.neighbour_passes, s.evidence.mixed_ratio) == (25, 0, 0.25)
    assert cfg.to_dict()["fit"] == {"max_iter": 25, "mixed_ratio": 0.25, "neighbour_passes": 0}
    assert isinstance(hash(cfg), int)                     # a Config stays hashable with its [fit] table
    toml.write_text("[fit]\nmax_iters = 25\n")
    with pytest.raises(ValueError, match=r"unknown fit setting 'max_iters' in .*fit\.toml\. "
                                         r"Did you mean fit\.max_iter\?"):
        settings_from_config(load_config([*default_paths("red"), toml]))
    assert settings_from_config(load_config(default_paths("red"))) == FitSettings()


def test_fit_options_take_their_defaults_from_the_settings(tmp_path, monkeypatch):
    """`xmodel fit` has no default of its own (the library's max_iter, 15, not 30); its options and
    --set fit.KEY=VALUE reach fit_scan, and a bad value fails before anything is written."""
    from xmodel.cli import main

    args = build_parser().parse_args(["fit", "x.h5", "--config", "a.toml", "--out", "o.h5"])
    assert all(getattr(args, "fit_" + k) is None for k in FIT_CLI_KEYS)
    help_text = build_parser()._subparsers._group_actions[0].choices["fit"].format_help()
    assert f"default {default_of('max_iter')}" in help_text

    import h5py
    import numpy as np
    src = tmp_path / "results.h5"
    with h5py.File(src, "w") as f:
        f["entry/reduction/polar"] = np.zeros((1, 2, 2), np.float32)
    seen = {}
    monkeypatch.setattr("fits.scan.driver.fit_scan", lambda src, cfg, out, settings, progress, **kw: seen.update(s=settings))
    paths = [str(p) for p in default_paths("red")]
    argv = ["fit", str(src), "--config", paths[0], "--config", paths[1], "--out", str(tmp_path / "o.h5"), "--quiet"]
    assert main(argv + ["--set", "fit.neighbour_passes=0", "--max-iter", "7"]) == 0
    assert seen["s"].neighbours.neighbour_passes == 0 and seen["s"].refine.max_iter == 7
    assert main(argv + ["--step-deg", "0"]) == 3
    assert not (tmp_path / "o.h5").exists()


def test_differing_keys_names_both_sides():
    assert differing_keys({"a": 1, "b": [1, 2]}, {"a": 1, "b": (1, 2), "c": 3}) == ["c"]
    assert differing_keys({"a": 1.0}, {"a": 2.0}) == ["a"]


def test_the_shipped_fit_table_and_the_reference_are_the_defaults():
    """configs/fit.toml holds every key at its default; docs/configuration.md is regenerated."""
    import importlib.util
    from pathlib import Path

    REPO = Path(__file__).resolve().parents[3]
    CONFIGS = REPO / "configs"
    cfg = load_config([*default_paths("red"), CONFIGS / "fit.toml"])
    assert settings_from_config(cfg) == FitSettings() and set(cfg.fit) | {"cache_dir"} == set(key_index())
    spec = importlib.util.spec_from_file_location("make_config_reference", REPO / "docs" / "make_config_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (REPO / "docs" / "configuration.md").read_text() == mod.main()
    assert (CONFIGS / "fit.toml").read_text() == mod.fit_toml()


def test_the_misorientation_prior_applies_only_where_the_misorientation_varies():
    from fits.scan.settings import DEFAULT_VARY

    assert FitSettings().refine.prior() == {}                           # not refined by default
    mis = FitSettings.of(vary=[*DEFAULT_VARY, "mis1_deg", "mis3_deg"], misorientation_prior_deg=1.5).refine
    assert mis.prior() == {"mis1_deg": (0.0, 1.5), "mis3_deg": (0.0, 1.5)}
    assert FitSettings.of(vary=[*DEFAULT_VARY, "mis2_deg"], misorientation_prior_deg="inf").refine.prior() == {}
    with pytest.raises(ValueError, match=r"fit\.misorientation_prior_deg = 0 .* expected a number \(or inf\) > 0"):
        FitSettings.of(misorientation_prior_deg=0)
