"""SynthGuardCallback inside a real Lightning Trainer: what it logs, and which steps reach the
weights, against a plain PyTorch loop that applies the guard's verdicts by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import synthguard as sg
from synthguard.datasets import load_digits

L = pytest.importorskip("lightning.pytorch")

from synthguard.integrations.lightning import SynthGuardCallback, batch_pairs  # noqa: E402

#: alpha_batch 0.05 lets 199 resamples reach Holm's smallest level; near_duplicate is off so a
#: distributed check equals one process on the concatenation (docs/scaling.md).
CONFIG = sg.GuardConfig(
    n_resamples=199, alpha_batch=0.05, sample_checks=("low_alignment", "off_manifold")
)
BATCH = 30
#: Four steps: real, real, a collapsed generator (one digit, jittered), real.
STEPS = ("real", "real", "collapsed", "real")


def _samples() -> list[dict[str, Any]]:
    digits = load_digits("test")
    rng = np.random.default_rng(0)
    base = digits.pixels[420].astype(np.int16)
    out, real = [], iter(range(270, 540))
    for kind in STEPS:
        for _ in range(BATCH):
            if kind == "real":
                i = next(real)
                pixels, label, caption = digits.pixels[i], int(digits.labels[i]), digits.captions[i]
            else:
                noise = rng.integers(-10, 11, base.shape)
                pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
                label, caption = int(digits.labels[420]), digits.captions[420]
            x = torch.tensor(pixels, dtype=torch.float32).flatten() / 255
            out.append({"image": Image.fromarray(pixels), "caption": caption, "y": label, "x": x})
    for i, sample in enumerate(out):
        sample["id"] = i  # dataset indices: they identify samples across DDP ranks
    return out


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Images and captions stay as they are (the guard reads raw images); x, y are stacked."""
    return {
        "image": [s["image"] for s in samples],
        "caption": [s["caption"] for s in samples],
        "id": torch.tensor([s["id"] for s in samples]),
        "x": torch.stack([s["x"] for s in samples]),
        "y": torch.tensor([s["y"] for s in samples]),
    }


class Classifier(L.LightningModule):
    """Digits from pixels; the loss keeps the guard's rejected samples out (the mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(64, 10)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return _loss(self.net, batch["x"], batch["y"], batch["sg_accepted"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return _optimizer(self.net)


def _loss(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> Any:
    losses = torch.nn.functional.cross_entropy(net(x), y, reduction="none")
    weight = mask.float()
    return (losses * weight).sum() / weight.sum().clamp(min=1)


def _optimizer(net: torch.nn.Module) -> torch.optim.Optimizer:
    # Momentum and weight decay move the weights even on a zero gradient: a voided step must
    # leave them, and the momentum buffer, alone.
    return torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=0.01)


def _initial() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in torch.nn.Linear(64, 10).state_dict().items()}


@pytest.fixture(scope="module")
def guard(digits_encoder: Any) -> sg.Guard:
    digits = load_digits("test")
    reference = sg.Reference.build(
        digits.images[:200], digits.captions[:200], encoder=digits_encoder
    )
    return sg.Guard(reference, CONFIG)


@pytest.fixture(scope="module")
def samples() -> list[dict[str, Any]]:
    return _samples()


@pytest.fixture(scope="module")
def reports(guard: sg.Guard, samples: list[dict[str, Any]]) -> list[sg.GuardReport]:
    """Each step's report from the guard directly (no Lightning)."""
    batches = [collate(samples[s * BATCH : (s + 1) * BATCH]) for s in range(len(STEPS))]
    out = [guard.check(batch_pairs(b)) for b in batches]
    assert [r.verdict for r in out] == ["accepted", "accepted", "rejected", "accepted"]
    assert out[0].n_accepted < BATCH  # some samples rejected: the mask matters
    return out


def _plain_loop(
    samples: list[dict[str, Any]], reports: list[sg.GuardReport], on_reject: str, accumulate: int
) -> dict[str, torch.Tensor]:
    """What the callback promises, written out: a rejected batch's optimizer step (with
    accumulation, its whole accumulated step) does not happen unless on_reject="log"."""
    net = torch.nn.Linear(64, 10)
    net.load_state_dict(_initial())
    optimizer = _optimizer(net)
    void = False
    for step, report in enumerate(reports):
        batch = collate(samples[step * BATCH : (step + 1) * BATCH])
        rejected = report.verdict == "rejected" and on_reject != "log"
        mask = torch.tensor([s.accepted and not rejected for s in report.samples])
        (_loss(net, batch["x"], batch["y"], mask) / accumulate).backward()
        void |= rejected
        if (step + 1) % accumulate == 0:
            if not void:
                optimizer.step()
            optimizer.zero_grad()
            void = False
    return net.state_dict()


def _fit(
    tmp_path: Path, guard: sg.Guard, samples: list[dict[str, Any]], **options: Any
) -> tuple[Classifier, SynthGuardCallback, Any]:
    accumulate = options.pop("accumulate", 1)
    model = Classifier()
    model.net.load_state_dict(_initial())
    callback = SynthGuardCallback(guard, **options)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=len(STEPS) // accumulate, max_epochs=1,
        accumulate_grad_batches=accumulate, callbacks=[callback], log_every_n_steps=1,
        logger=L.loggers.CSVLogger(str(tmp_path), name="csv", version=0),
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(samples, batch_size=BATCH, collate_fn=collate)
    trainer.fit(model, loader)
    return model, callback, trainer


def _logged(tmp_path: Path) -> list[dict[str, float]]:
    """The CSV logger's rows (one per step), empty cells left out."""
    with (tmp_path / "csv" / "version_0" / "metrics.csv").open() as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("on_reject", "accumulate"), [("skip", 1), ("log", 1), ("skip", 2)],
    ids=["skip", "log", "skip, accumulating 2"],
)  # fmt: skip
def test_the_weights_are_those_of_the_loop_that_applies_the_verdicts(
    on_reject: str, accumulate: int, tmp_path: Path, guard: sg.Guard,
    samples: list[dict[str, Any]], reports: list[sg.GuardReport],
) -> None:  # fmt: skip
    model, callback, _ = _fit(tmp_path, guard, samples, on_reject=on_reject, accumulate=accumulate)
    want = _plain_loop(samples, reports, on_reject, accumulate)
    for name, value in model.net.state_dict().items():
        torch.testing.assert_close(value, want[name], rtol=1e-5, atol=1e-6, msg=name)
    assert callback.batches_checked == len(STEPS) and callback.batches_rejected == 1
    assert callback.steps_skipped == (0 if on_reject == "log" else 1)
    # The module saw each step's decisions; the last one is still on the callback.
    assert callback.accepted is not None
    assert callback.accepted.tolist() == [s.accepted for s in reports[-1].samples]
    if accumulate > 1:  # Lightning keeps one row per optimizer step
        return
    # Logged every step: the report's flat numbers, as the guard gives them directly.
    rows = [r for r in _logged(tmp_path) if "synthguard/accepted" in r]
    assert len(rows) == len(STEPS)
    for step, (row, report) in enumerate(zip(rows, reports, strict=True)):
        want_metrics = report.to_metrics()
        got = {k: v for k, v in row.items() if k in want_metrics}
        assert got == pytest.approx(want_metrics, rel=1e-6), step
        assert row["synthguard/batches_rejected"] == (step >= 2)
        extra = set(row) - set(want_metrics) - {"step", "epoch", "synthguard/batches_rejected",
                                                 "synthguard/steps_skipped"}  # fmt: skip
        for key in extra:  # reason codes without rejects: 0; numbers the batch lacks: NaN
            assert row[key] == 0 if "/rejects/" in key else np.isnan(row[key]), (step, key)
    # The collapsed step had no per-sample rejects: 0, not step 1's counts again.
    assert (
        rows[2]["synthguard/rejects/low_alignment"]
        == 0
        < rows[1]["synthguard/rejects/low_alignment"]
    )


@pytest.mark.slow
def test_stop_ends_training_after_the_rejected_batch_without_its_step(
    tmp_path: Path, guard: sg.Guard, samples: list[dict[str, Any]], reports: list[Any]
) -> None:
    model, callback, trainer = _fit(tmp_path, guard, samples, on_reject="stop")
    assert callback.batches_checked == 3 and trainer.should_stop
    want = _plain_loop(samples[: 3 * BATCH], reports[:3], "stop", 1)
    for name, value in model.net.state_dict().items():
        torch.testing.assert_close(value, want[name], rtol=1e-5, atol=1e-6, msg=name)


def test_bad_arguments_and_batches_are_named(guard: sg.Guard) -> None:
    with pytest.raises(sg.InvalidInputError, match="on_reject must be one of"):
        SynthGuardCallback(guard, on_reject="drop")  # type: ignore[arg-type]
    with pytest.raises(sg.InvalidInputError, match=r"guard must be a synthguard\.Guard; got"):
        SynthGuardCallback("guard")  # type: ignore[arg-type]
    with pytest.raises(sg.InvalidInputError, match="pairs must be callable or None"):
        SynthGuardCallback(guard, pairs=3)  # type: ignore[arg-type]
    with pytest.raises(sg.InvalidInputError, match=r"keys \['pixels'\]: pass pairs="):
        batch_pairs({"pixels": torch.zeros(2, 64)})
    with pytest.raises(sg.InvalidInputError, match=r"'caption'; got \(tensor.*pass pairs="):
        batch_pairs((torch.zeros(2, 64), ["a", "b"]))


def test_the_monitor_forwards_to_a_lightning_logger(tmp_path: Path) -> None:
    """A Lightning logger is a CollapseMonitor logger too (CSVLogger buffers until save())."""
    csv_logger = L.loggers.CSVLogger(str(tmp_path), name="csv", version=0)
    values = [0.02, 0.03, float("nan"), 0.08]
    with sg.CollapseMonitor(tmp_path / "loop.jsonl", loggers=[csv_logger]) as monitor:
        for g, v in enumerate(values):
            monitor.log(g, {"variance_ratio": 1.0 - g / 10, "frechet_distance": v})
    rows = _logged(tmp_path)
    assert [row["step"] for row in rows] == [0, 1, 2, 3]
    assert [row["monitor/variance_ratio"] for row in rows] == [1.0, 0.9, 0.8, 0.7]
    assert [row.get("monitor/frechet_distance") for row in rows] == [0.02, 0.03, None, 0.08]
    assert [row["monitor/warnings"] for row in rows] == [
        len(r["warnings"]) for r in monitor.records
    ]


def test_a_batch_that_cannot_be_converted_fails_the_check_for_every_rank(
    guard: sg.Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under DDP the other ranks wait in the check's first collective: a rank whose batch
    cannot even become a PairBatch must still tell them it failed (shard.fail)."""
    import synthguard.integrations.lightning as module

    failed: list[bool] = []

    class Shard:
        def fail(self) -> None:
            failed.append(True)

    monkeypatch.setattr(module, "shard_for", lambda sync: Shard())
    callback = SynthGuardCallback(guard, pairs=lambda batch: list(batch))
    with pytest.raises(sg.InvalidInputError, match="pairs\\(batch\\) must return a PairBatch"):
        callback.on_train_batch_start(None, None, {"x": 1}, 0)
    assert failed == [True]


# -- examples/lightning_gate.py ---------------------------------------------------------------


@pytest.mark.slow
def test_lightning_gate_voids_the_collapsed_batches_and_logs_every_step(
    tmp_path: Path, capsys: Any
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from test_examples import _load

    assert _load("lightning_gate").main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    verdicts = [line.split(": ")[1].split(",")[0] for line in out.splitlines()
                if line.startswith("batch: ")]  # fmt: skip
    assert [i for i, v in enumerate(verdicts) if v == "rejected"] == [3, 6]  # the collapsed
    assert "optimizer steps voided: 2 of 8" in out
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    accepted = [e.value for e in events.Scalars("synthguard/accepted")]
    assert accepted == [float(v == "accepted") for v in verdicts]
    assert [e.value for e in events.Scalars("synthguard/steps_skipped")] == [0, 0, 0, 0, 1, 1, 1, 2]


# -- DDP: two CPU processes (gloo), Lightning's own ddp_spawn --------------------------------


class _Shards(L.LightningDataModule):
    """Each rank's loader, made in the rank: rank r takes samples r, r + 2, ... in order
    (Lightning's own sampler would shuffle)."""

    def __init__(self, samples: list[dict[str, Any]]) -> None:
        super().__init__()
        self.samples = samples

    def train_dataloader(self) -> Any:
        sampler = torch.utils.data.DistributedSampler(self.samples, shuffle=False)
        return torch.utils.data.DataLoader(
            self.samples, batch_size=BATCH // 2, sampler=sampler, collate_fn=collate
        )


class _Record(L.Callback):
    """Writes each rank's reports and final weights, for the test process to compare."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.reports: list[dict[str, Any]] = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        guard_cb = next(c for c in trainer.callbacks if isinstance(c, SynthGuardCallback))
        assert guard_cb.last_report is not None
        self.reports.append(guard_cb.last_report.model_dump(mode="json"))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        rank = trainer.global_rank
        state = {k: v.tolist() for k, v in pl_module.net.state_dict().items()}
        text = json.dumps({"reports": self.reports, "state": state})
        Path(self.folder, f"rank{rank}.json").write_text(text)


@pytest.mark.slow
def test_ddp_ranks_void_the_same_steps_and_log_the_global_batch(
    tmp_path: Path, guard: sg.Guard, samples: list[dict[str, Any]]
) -> None:
    """2 ranks of 15 samples per step (DistributedSampler: rank r takes every other sample):
    every rank gets the verdict of the 30-sample global batch, the collapsed step is voided
    on both, and the weights equal a plain loop over both shards with DDP's gradient mean."""
    model = Classifier()
    model.net.load_state_dict(_initial())
    trainer = L.Trainer(
        accelerator="cpu", strategy="ddp_spawn", devices=2, max_steps=len(STEPS),
        callbacks=[SynthGuardCallback(guard), _Record(str(tmp_path))], log_every_n_steps=1,
        logger=L.loggers.CSVLogger(str(tmp_path), name="csv", version=0),
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        use_distributed_sampler=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=_Shards(samples))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    net = torch.nn.Linear(64, 10)
    net.load_state_dict(_initial())
    optimizer = _optimizer(net)
    logged = [r for r in _logged(tmp_path) if "synthguard/accepted" in r]
    for step in range(len(STEPS)):
        start = step * BATCH
        shards = [list(range(start + r, start + BATCH, 2)) for r in range(2)]
        whole = guard.check(batch_pairs(collate([samples[i] for i in shards[0] + shards[1]])))
        local = [guard.check(batch_pairs(collate([samples[i] for i in s])), sync=False)
                 for s in shards]  # fmt: skip
        for r in range(2):  # the global verdict on every rank, per-sample decisions local
            got = ranks[r]["reports"][step]
            assert got["verdict"] == whole.verdict and got["world_size"] == 2
            assert got["metrics"] == whole.model_dump(mode="json")["metrics"], (step, r)
            np.testing.assert_equal(got["samples"], local[r].model_dump(mode="json")["samples"])
        rejected = whole.verdict == "rejected"
        assert rejected == (STEPS[step] == "collapsed")
        # Logged once (rank 0): the global batch's numbers, the counts of both ranks.
        want = whole.to_metrics()
        for key in ("synthguard/accepted", "synthguard/n_samples", "synthguard/risk_score"):
            assert logged[step][key] == pytest.approx(want[key]), (step, key)
        for code in ("low_alignment", "off_manifold"):
            key = f"synthguard/rejects/{code}"
            count = sum(shard.rejects_by_reason.get(code, 0) for shard in local)
            assert logged[step].get(key, 0.0) == count, (step, key)
        optimizer.zero_grad()
        for r, shard in enumerate(shards):
            batch = collate([samples[i] for i in shard])
            mask = torch.tensor([s.accepted and not rejected for s in local[r].samples])
            (_loss(net, batch["x"], batch["y"], mask) / 2).backward()  # DDP averages
        if not rejected:
            optimizer.step()
    for r in range(2):
        for name, value in net.state_dict().items():
            got = torch.tensor(ranks[r]["state"][name])
            torch.testing.assert_close(got, value, rtol=1e-5, atol=1e-6, msg=f"rank {r} {name}")
