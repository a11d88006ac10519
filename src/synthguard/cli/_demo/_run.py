"""``synthguard demo``: run the loop three ways, monitor every generation, write the report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from synthguard._validation import check_int
from synthguard.cli._demo._html import write_report
from synthguard.cli._demo._loop import ARMS, Generation, LoopConfig, fit_classifier, run_generation
from synthguard.cli._demo._result import DemoResult
from synthguard.datasets import DIGIT_NAMES, load_digits
from synthguard.encoders import load_encoder
from synthguard.guard import Guard
from synthguard.monitor import CollapseMonitor, generation_metrics
from synthguard.reference import Reference

__all__ = ["DemoResult", "run_demo"]

TEMPLATE = "a handwritten digit {name}"


class _Embedder:
    """The frozen encoder with a memo: accumulated data is embedded once, not every generation."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.images: dict[bytes, torch.Tensor] = {}
        self.texts: dict[str, torch.Tensor] = {}

    def __call__(self, gen: Generation) -> tuple[torch.Tensor, torch.Tensor]:
        keys = [p.tobytes() for p in gen.pixels]
        new = {k: p for k, p in zip(keys, gen.pixels, strict=True) if k not in self.images}
        if new:
            rows = self.encoder.encode_images([Image.fromarray(p) for p in new.values()])
            self.images.update(zip(new, rows, strict=True))
        fresh = sorted({c for c in gen.captions if c not in self.texts})
        if fresh:
            self.texts.update(zip(fresh, self.encoder.encode_texts(fresh), strict=True))
        return (
            torch.stack([self.images[k] for k in keys]),
            torch.stack([self.texts[c] for c in gen.captions]),
        )


def run_demo(
    generations: int = 10,
    *,
    seed: int = 0,
    out: str | Path = "synthguard-demo",
    progress: bool = True,
    config: LoopConfig | None = None,
) -> DemoResult:
    """Run the self-consuming loop unguarded, guarded and accumulating; log and report.

    Writes ``<out>/<arm>.jsonl`` (one :class:`~synthguard.CollapseMonitor` log per arm, started
    afresh) and ``<out>/report.html``.
    """
    start = time.perf_counter()
    generations = check_int("generations", generations, minimum=1)
    cfg = config or LoopConfig(seed=check_int("seed", seed, minimum=0))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoder = load_encoder("bundled:digits")
    embed = _Embedder(encoder)
    train, test = load_digits("train"), load_digits("test")
    # The encoder was trained on "train": the reference and the evaluation use "test" (halves).
    half = len(test.labels) // 2
    reference = Reference.build(
        test.images[:half], test.captions[:half], encoder=encoder, labels=test.labels[:half],
        label_names=DIGIT_NAMES, label_templates=TEMPLATE, ids=test.ids[:half],
    )  # fmt: skip
    guard = Guard(reference)
    eval_pixels, eval_labels = test.pixels[half:], np.asarray(test.labels[half:])
    real = Generation(train.pixels, np.asarray(train.labels), list(train.captions))
    rows: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    monitors = {}
    checks: list[tuple[int, Any, Any]] = []
    alignments: dict[str, list[float]] = {}
    bar = tqdm(total=len(ARMS) * generations, desc="generations", disable=not progress)
    for arm in ARMS:
        log = out / f"{arm}.jsonl"
        log.unlink(missing_ok=True)  # the demo starts afresh; a library user resumes instead
        monitors[arm] = monitor = CollapseMonitor(log)
        prev, history = real, list[Generation]()
        for generation in range(generations + 1):
            if generation:
                synthetic, prev = run_generation(arm, prev, real, history, guard, cfg, generation)
                history.append(synthetic)
                if arm == "guarded":
                    checks.extend(
                        (generation, r, b)
                        for r, b in zip(synthetic.reports, synthetic.batches, strict=True)
                    )
            image, text = embed(prev)
            metrics = generation_metrics(reference, image, text)
            model = fit_classifier(prev.pixels, prev.labels, cfg.seed)
            x = eval_pixels.reshape(len(eval_pixels), -1) / 255.0
            metrics["accuracy"] = float((model.predict(x) == eval_labels).mean())
            reports = history[-1].reports if generation and arm == "guarded" else None
            record = monitor.log(
                generation, metrics, reports=reports, extra={"training_pairs": len(prev.labels)}
            )
            rows[arm].append(record)
            if generation == generations:
                alignments[arm] = ((image * text).sum(dim=1)).tolist()
            if generation:
                bar.update()
    bar.close()
    real_image, real_text = embed(real)
    alignments["real"] = (real_image * real_text).sum(dim=1).tolist()
    first = {arm: next((r["generation"] for r in rows[arm] if r["warnings"]), None) for arm in ARMS}
    result = DemoResult(rows, first, out, time.perf_counter() - start, alignments, checks)
    write_report(result, out / "report.html")
    result.seconds = time.perf_counter() - start
    return result
