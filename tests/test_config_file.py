"""``GuardConfig.from_file``: YAML and JSON files of GuardConfig fields (the CLI's --config).

Safe loading only, one value per key, and every bad key named with its constraint and value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import synthguard as sg

GuardConfig = sg.GuardConfig

SETTINGS: dict[str, Any] = {
    "alpha": 0.1,
    "alpha_batch": 0.02,
    "seed": 7,
    "label_policy": "reject",
    "sample_checks": ["low_alignment", "off_manifold"],
    "batch_tests": ["frechet_distance", "coverage"],
    "n_resamples": 199,
    "class_mix": False,
    "threads": 2,
    "device": "cpu",
    "test_weights": {"flag_rate": 2.0},  # a mapping in the file, sorted pairs in the config
}


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_a_file_gives_the_config_its_fields_give(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"guard{suffix}"
    text = json.dumps(SETTINGS) if suffix == ".json" else yaml.safe_dump(SETTINGS)
    path.write_text(text)
    config = GuardConfig.from_file(path)
    assert config == GuardConfig(**SETTINGS)  # the independent reference: the constructor
    assert config.model_fields_set == set(SETTINGS)  # set in the file = set explicitly
    # to_dict round-trips, and overrides win over the file.
    path.write_text(json.dumps(config.to_dict()) if suffix == ".json" else
                    yaml.safe_dump(config.to_dict()))  # fmt: skip
    assert GuardConfig.from_file(path) == config
    assert GuardConfig.from_file(path, seed=8, alpha=0.2) == GuardConfig(
        **{**SETTINGS, "seed": 8, "alpha": 0.2}
    )


def test_an_empty_yaml_file_is_every_default(tmp_path: Path) -> None:
    path = tmp_path / "guard.yaml"
    path.write_text("# nothing set\n")
    assert GuardConfig.from_file(path) == GuardConfig()


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("g.yaml", "alpha: 1.5\n", "g.yaml: key 'alpha' must be less than 1; got 1.5"),
        ("g.yaml", "alpah: 0.1\n", "'alpah' is not a GuardConfig field (did you mean 'alpha'?)"),
        ("g.yaml", "n_resamples: many\n", "g.yaml: key 'n_resamples' must be a valid integer"),
        ("g.yaml", "sample_checks: [low_alignment, nope]\n",
         "g.yaml: key 'sample_checks[1]' must be 'low_alignment', 'off_manifold'"),
        ("g.yaml", "class_mix: maybe\n", "g.yaml: key 'class_mix' must be a valid boolean"),
        ("g.yaml", "n_resamples: 100\n", "g.yaml: n_resamples must be >= 799"),
        ("g.yaml", "alpha: 0.1\nseed: 1\nalpha: 0.2\n", "key 'alpha' is given twice (line 3)"),
        ("g.json", '{"alpha": 0.1, "alpha": 0.2}', "g.json: key 'alpha' is given twice"),
        ("g.yaml", "alpha: !!python/object/apply:os.system ['true']\n",
         "g.yaml is not valid YAML: could not determine a constructor for the tag"),
        ("g.yaml", "alpha: [0.1\n", "g.yaml is not valid YAML"),
        ("g.json", '{"alpha": 0.1,', "g.json is not valid JSON"),
        ("g.yaml", "- alpha\n", "g.yaml must hold a mapping of GuardConfig fields"),
        ("g.yaml", "1: 0.1\n", "g.yaml: keys must be GuardConfig field names; got 1"),
        ("g.toml", "alpha = 0.1\n", "must end in .yaml, .yml or .json"),
        ("g.yaml", b"alpha: 0.1 \xff\n", "g.yaml is not UTF-8 text"),
    ],
)  # fmt: skip
def test_bad_files_name_the_key_the_constraint_and_the_value(
    tmp_path: Path, name: str, text: str | bytes, expected: str
) -> None:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(sg.InvalidInputError) as info:
        GuardConfig.from_file(path)
    assert expected in str(info.value).replace(str(tmp_path) + "/", "")


def test_an_override_is_named_as_one(tmp_path: Path) -> None:
    path = tmp_path / "guard.json"
    path.write_text('{"alpha": 0.1}')
    with pytest.raises(sg.InvalidInputError, match=r"alpha \(overriding .*guard.json\) must be"):
        GuardConfig.from_file(path, alpha=2.0)


def test_only_regular_files_are_read(tmp_path: Path) -> None:
    with pytest.raises(sg.InvalidInputError, match="file not found"):
        GuardConfig.from_file(tmp_path / "missing.yaml")
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(sg.InvalidInputError, match=r"folder\.yaml"):
        GuardConfig.from_file(tmp_path / "folder.yaml")
