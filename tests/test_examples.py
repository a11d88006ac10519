"""The examples run end to end (the paper loop in its offline --smoke mode)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_paper_loop_smoke_runs_offline(tmp_path: Path, capsys: Any) -> None:
    assert _load("paper_loop").main(["--smoke", "--out", str(tmp_path)]) == 0
    lines = (tmp_path / "paper_loop.jsonl").read_text().splitlines()
    assert [json.loads(line)["generation"] for line in lines] == [0, 1, 2]
    assert json.loads(lines[1])["guard"]["samples"] == 8
    for generation in (1, 2):
        report = json.loads((tmp_path / f"generation_{generation}.json").read_text())
        assert report["n_samples"] == 8 and len(report["samples"]) == 8
    assert "generation 2:" in capsys.readouterr().out


@pytest.mark.slow
def test_guarded_finetune_beats_training_on_raw_synthetic_data(capsys: Any) -> None:
    _load("guarded_finetune").main()
    out = capsys.readouterr().out
    raw = float(out.split("trained on raw synthetic data:")[1].split()[0])
    guarded = float(out.split("trained on guarded synthetic data:")[1].split()[0])
    assert guarded > raw, out
    assert "batches rejected: 3 of 12" in out  # the collapsed ones
    # The 30 % bad captions make the other batches "excess_rejects": their good samples train.
    assert "batches with excess rejects (accepted samples kept): 9 of 12" in out


@pytest.mark.slow
def test_hf_dataset_gate_keeps_only_accepted_chunks_samples(capsys: Any) -> None:
    pytest.importorskip("datasets")
    assert _load("hf_dataset_gate").main([]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("chunk ")]
    assert len(lines) == 3 and "REJECTED" in lines[2]  # the collapsed chunk
    # Accepted chunks and "excess rejects" chunks keep their accepted samples.
    accepted = [int(line.split(", ")[-1].split()[0]) for line in lines if "REJECTED" not in line]
    kept = int(out.split("kept for training: ")[1].split()[0])
    assert kept == sum(accepted) and int(lines[1].split(", ")[-1].split()[0]) <= 30


def test_stream_shards_guards_each_chunk_with_the_config_file(tmp_path: Path, capsys: Any) -> None:
    """Three gzipped shards through a brace pattern, one bounded chunk at a time, settings from
    guard.yaml: the real chunk passes, the miscaptioned one has excess rejects, the collapsed
    one is rejected, and every pair written is read back."""
    module = _load("stream_shards")
    assert module.main(["--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("chunk 0: accepted")
    assert lines[1].startswith("chunk 1: excess_rejects") and "flag_rate" in lines[1]
    assert lines[2].startswith("chunk 2: rejected")
    assert lines[3].startswith("kept for training:") and lines[3].split()[5] == "120"
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        "000.tar.gz", "001.tar.gz", "002.tar.gz"
    ]  # fmt: skip
