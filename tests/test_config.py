"""Configs: defaults are the SV3D recipe in default.yaml, loading is strict, every field is documented."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from recon.config import (
    CONFIG_DIR,
    PipelineConfig,
    all_config_classes,
    config_to_dict,
    config_to_yaml,
    field_docs,
    load_config,
)
from recon.errors import ConfigError


def test_default_yaml_spells_out_the_dataclass_defaults():
    on_disk = yaml.safe_load((CONFIG_DIR / "default.yaml").read_text())
    assert on_disk == config_to_dict(PipelineConfig())


@pytest.mark.parametrize("preset", ["default", "fast", "tiny"])
def test_presets_load(preset):
    assert isinstance(load_config(preset), PipelineConfig)


def test_every_config_field_has_a_one_line_docstring():
    for cls in all_config_classes():
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            assert f.name in docs and docs[f.name].strip(), f"{cls.__name__}.{f.name} has no docstring"


def test_unknown_key_names_key_and_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  mask_treshold: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*mask_treshold"):
        load_config(bad)


def test_wrong_type_names_key_and_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  mask_open_px: 1.5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*mask_open_px.*expected int"):
        load_config(bad)


def test_bool_is_not_accepted_as_number(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: true\n")
    with pytest.raises(ConfigError, match="seed"):
        load_config(bad)


def test_literal_field_rejects_other_values():
    with pytest.raises(ConfigError, match="device"):
        load_config("default", ["device=tpu"])


def test_overrides_are_typed_and_layered():
    cfg = load_config("fast", ["data.mask_threshold=0.2", "seed=7"])
    assert cfg.data.mask_threshold == 0.2 and cfg.seed == 7
    assert cfg.data.max_resolution == load_config("fast").data.max_resolution  # untouched keys stay
    with pytest.raises(ConfigError, match="mask_threshold"):
        load_config("default", ["data.mask_threshold=high"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config("default", ["data.mask_threshold"])


def test_depth_opacity_outside_the_open_unit_interval_is_refused():
    for bad in ("0", "1", "1.5"):
        with pytest.raises(ConfigError, match="depth_opacity"):
            load_config("default", [f"extract.depth_opacity={bad}"])
    assert load_config("default", ["extract.depth_opacity=0.1"]).extract.depth_opacity == 0.1


def test_negative_illumination_blur_is_refused():
    with pytest.raises(ConfigError, match="illumination_blur"):
        load_config("default", ["refine.illumination_blur=-0.1"])
    assert load_config("default", ["refine.illumination_blur=0.04"]).refine.illumination_blur == 0.04


def test_an_offset_grid_that_does_not_divide_the_lattice_is_refused():
    for override in ("refine.offset_grid_cells=7", "refine.offset_grid_cells=0"):
        with pytest.raises(ConfigError, match="offset_grid_cells"):
            load_config("default", [override])
    # With the phase off the grid's size is not used.
    assert load_config("default", ["refine.offset_grid_steps=0", "refine.offset_grid_cells=7"]).refine.grid == 128


def test_bad_illumination_pair_settings_are_refused():
    for override, field in (("refine.illumination_pair_weight=-1", "illumination_pair_weight"),
                            ("refine.illumination_pair_tau=0", "illumination_pair_tau"),
                            ("refine.illumination_pair_offsets=[0.1,1.5]", "illumination_pair_offsets"),
                            ("refine.illumination_pair_offsets=[]", "illumination_pair_offsets"),
                            ("refine.illumination_groups=0", "illumination_groups")):
        with pytest.raises(ConfigError, match=field):
            load_config("default", [override])
    assert load_config("default", ["refine.illumination_pair_offsets=[0.05]"]).refine.illumination_pair_offsets \
        == (0.05,)


def test_negative_distortion_weight_is_refused():
    with pytest.raises(ConfigError, match="distortion_weight"):
        load_config("default", ["coarse.distortion_weight=-0.1"])
    assert load_config("default", ["coarse.distortion_weight=0.2"]).coarse.distortion_weight == 0.2
    # On in the default preset, off in the fast one (its coarse meshes were worse with it: fast.yaml).
    assert load_config("default").coarse.distortion_weight == 0.1
    assert load_config("fast").coarse.distortion_weight == 0.0


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="fast"):
        load_config("nonexistent")


def test_yaml_dump_round_trips(tmp_path: Path):
    cfg = load_config("tiny", ["seed=3"])
    path = tmp_path / "resolved.yaml"
    path.write_text(config_to_yaml(cfg))
    assert load_config(path) == cfg
