"""Gate synthetic batches inside a Lightning fit and log what the guard measured.

A synthetic stream of digit pairs, 8 batches of 30: batches 3 and 6 come from a collapsing
generator (one digit, jittered), and one caption in ten names the wrong digit.
``SynthGuardCallback`` checks every batch before the training step: the collapsed batches are
rejected and their optimizer steps voided (the weights do not move), the miscaptioned samples are
kept out of the loss by the mask it puts in the batch (``batch["sg_accepted"]``), and every number
of every report goes to the Lightning logger (TensorBoard here) with ``self.log``.

    python examples/lightning_gate.py --out lightning-gate/   # offline, ~20 s on 2 CPU cores
    tensorboard --logdir lightning-gate/                      # synthguard/* per step
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from PIL import Image

import synthguard as sg
from synthguard.datasets import DIGIT_NAMES, load_digits
from synthguard.integrations.lightning import SynthGuardCallback

BATCH = 30
COLLAPSED = (3, 6)  # batches from a collapsing generator


def synthetic_stream() -> list[dict[str, Any]]:
    """Held-out digits 200..; every tenth caption names another digit; two collapsed batches."""
    digits = load_digits("test")
    rng = np.random.default_rng(0)
    out: list[dict[str, Any]] = []
    real = iter(range(200, 540))
    for b in range(8):
        for j in range(BATCH):
            if b in COLLAPSED:
                base = digits.pixels[b].astype(np.int16)
                noise = rng.integers(-10, 11, base.shape)
                pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
                label = int(digits.labels[b])
                named = label
            else:
                i = next(real)
                pixels, label = digits.pixels[i], int(digits.labels[i])
                named = (label + 4) % 10 if j % 10 == 0 else label  # a bad captioner
            out.append({
                "image": Image.fromarray(pixels),
                "caption": f"a handwritten digit {DIGIT_NAMES[named]}",
                "id": len(out),  # the dataset index: ids identify samples across DDP ranks
                "x": torch.tensor(pixels, dtype=torch.float32).flatten() / 255,
                "y": label,
            })  # fmt: skip
    return out


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Raw images and captions for the guard; pixels and labels for the model."""
    return {
        "image": [s["image"] for s in samples],
        "caption": [s["caption"] for s in samples],
        "id": torch.tensor([s["id"] for s in samples]),
        "x": torch.stack([s["x"] for s in samples]),
        "y": torch.tensor([s["y"] for s in samples]),
    }


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = torch.nn.functional.cross_entropy(
            self.net(batch["x"]), batch["y"], reduction="none"
        )
        keep = batch["sg_accepted"].float()  # the guard's per-sample decisions
        loss = (losses * keep).sum() / keep.sum().clamp(min=1)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="TensorBoard log folder")
    args = parser.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="lightning-gate-")

    torch.manual_seed(0)
    real = load_digits("test")
    reference = sg.Reference.build(real.images[:200], real.captions[:200], encoder="bundled:digits")
    guard = sg.Guard(reference, sg.GuardConfig(n_resamples=199, alpha_batch=0.05))

    def say(report: sg.GuardReport) -> None:
        print(f"batch: {report.verdict}, {report.n_accepted}/{report.n_samples} samples accepted")

    callback = SynthGuardCallback(guard, on_reject="skip", on_report=say)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, callbacks=[callback], log_every_n_steps=1,
        logger=L.loggers.TensorBoardLogger(out, name="", version=""),
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(synthetic_stream(), batch_size=BATCH, collate_fn=collate)
    model = Classifier()
    trainer.fit(model, loader)

    test = load_digits("train")  # digits the stream never showed
    x = torch.tensor(test.pixels.reshape(len(test.labels), 64), dtype=torch.float32) / 255
    accuracy = (model.net(x).argmax(1) == torch.as_tensor(test.labels)).float().mean()
    print(f"optimizer steps voided: {callback.steps_skipped} of {callback.batches_checked}")
    print(f"accuracy on real digits: {accuracy:.3f}")
    print(f"logged to {out} (tensorboard --logdir {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
