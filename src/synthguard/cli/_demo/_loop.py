"""A genuine self-consuming loop on the bundled real digits (docs/demo.md).

Each generation, fit on the previous generation's image–caption pairs:

- a **generator** of images: per class, a kernel density estimate of the previous generation's
  images (draw one of them, shrink it towards its class mean by the temperature ``τ`` (the
  decoding-budget knob: ``τ < 1`` favours typical samples), add Gaussian noise of bandwidth
  ``h``); drawing with replacement from a finite sample loses the tails, as in Shumailov et al.;
- a **captioner**: a logistic-regression classifier trained on the previous generation's
  images and the labels their captions state, writing a short caption for each new image.

A downstream classifier trained on each generation is scored on *real* held-out digits. The
same loop runs three ways: ``replace`` (unguarded), ``guarded`` (synthguard gates and relabels
every batch; a rejected batch is not trained on) and ``accumulate`` (real + every synthetic
generation; Gerstgrasser et al. 2024).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression

from synthguard.batch import PairBatch
from synthguard.datasets import digit_caption
from synthguard.guard import Guard
from synthguard.report import GuardReport

__all__ = ["ARMS", "Generation", "LoopConfig", "fit_classifier", "run_generation"]

ARMS = ("replace", "guarded", "accumulate")


@dataclass(frozen=True)
class LoopConfig:
    """Knobs of the loop (defaults tuned for a 2-core CPU run of a few minutes)."""

    samples: int = 1000  # synthetic pairs per generation
    temperature: float = 0.93  # shrink towards the class mean (decoding budget)
    bandwidth: float = 16.0  # Gaussian noise, in pixel units (0-255)
    batch_size: int = 1000  # pairs per guard.check: one check per generation
    seed: int = 0


@dataclass
class Generation:
    """One generation's training data of one arm, with what the guard said about it."""

    pixels: np.ndarray  # [n, 8, 8] uint8
    labels: np.ndarray  # [n] int, the labels the captions state
    captions: list[str]
    reports: list[GuardReport] = field(default_factory=list)
    batches: list[PairBatch] = field(default_factory=list)  # what each report checked


def fit_classifier(pixels: np.ndarray, labels: np.ndarray, seed: int) -> LogisticRegression:
    """The captioner / downstream model: multinomial logistic regression on pixels."""
    x = pixels.reshape(len(pixels), -1).astype(np.float64) / 255.0
    model = LogisticRegression(max_iter=300, C=0.5, random_state=seed)
    return model.fit(x, labels)


def _generate(prev: Generation, cfg: LoopConfig, rng: np.random.Generator) -> np.ndarray:
    """New images from a per-class KDE of the previous generation, with intended classes."""
    classes, counts = np.unique(prev.labels, return_counts=True)
    intended = rng.choice(classes, size=cfg.samples, p=counts / counts.sum())
    flat = prev.pixels.reshape(len(prev.pixels), -1).astype(np.float64)
    out = np.empty((cfg.samples, flat.shape[1]))
    for c in classes:
        rows = np.flatnonzero(prev.labels == c)
        where = np.flatnonzero(intended == c)
        mean = flat[rows].mean(axis=0)
        drawn = flat[rng.choice(rows, size=where.size)]
        noise = rng.normal(0.0, cfg.bandwidth, size=(where.size, flat.shape[1]))
        out[where] = mean + cfg.temperature * (drawn - mean) + noise
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(-1, 8, 8)


def _caption(pixels: np.ndarray, prev: Generation, cfg: LoopConfig, rng: np.random.Generator,
             ) -> tuple[np.ndarray, list[str]]:  # fmt: skip
    captioner = fit_classifier(prev.pixels, prev.labels, cfg.seed)
    labels = captioner.predict(pixels.reshape(len(pixels), -1) / 255.0).astype(np.int64)
    return labels, [digit_caption(int(y), rng) for y in labels]


def run_generation(
    arm: str,
    prev: Generation,
    real: Generation,
    history: list[Generation],
    guard: Guard,
    cfg: LoopConfig,
    generation: int,
) -> tuple[Generation, Generation]:
    """Produce generation ``generation`` of ``arm`` from ``prev``.

    Returns ``(synthetic, training)``: the pairs the generator and captioner made, and what the
    arm trains on next (replace: all of them; guarded: the accepted ones, topped up with a
    random part of ``prev`` for what was rejected, since a rejected sample or batch is not
    trained on; accumulate: real plus every synthetic generation).
    """
    rng = np.random.default_rng([cfg.seed, generation, ARMS.index(arm)])
    pixels = _generate(prev, cfg, rng)
    labels, captions = _caption(pixels, prev, cfg, rng)
    synthetic = Generation(pixels, labels, captions)
    if arm == "replace":
        return synthetic, synthetic
    if arm == "accumulate":
        parts = [real, *history, synthetic]
        return synthetic, Generation(
            np.concatenate([p.pixels for p in parts]),
            np.concatenate([p.labels for p in parts]),
            [c for p in parts for c in p.captions],
        )
    kept_pixels, kept_labels, kept_captions = [], [], []
    for start in range(0, cfg.samples, cfg.batch_size):
        rows = range(start, min(start + cfg.batch_size, cfg.samples))
        batch = PairBatch(
            [Image.fromarray(pixels[i]) for i in rows], [captions[i] for i in rows],
            labels=[int(labels[i]) for i in rows], ids=[f"g{generation}-{i}" for i in rows],
        )  # fmt: skip
        report = guard.check(batch)
        synthetic.reports.append(report)
        synthetic.batches.append(batch)
        clean = report.apply(batch)
        if clean is not None:
            for j, id_ in enumerate(clean.ids):
                i = int(str(id_).split("-")[1])
                kept_pixels.append(pixels[i])
                kept_labels.append(clean.labels[j] if clean.labels is not None else labels[i])
                kept_captions.append(clean.captions[j])
    # What was rejected is not trained on: the arm keeps that much of the data it had.
    keep = rng.choice(len(prev.labels), size=cfg.samples - len(kept_pixels), replace=False)
    return synthetic, Generation(
        np.concatenate([np.stack(kept_pixels or [prev.pixels[0]])[: len(kept_pixels)],
                        prev.pixels[keep]]),
        np.concatenate([np.asarray(kept_labels, dtype=np.int64), prev.labels[keep]]),
        [*kept_captions, *(prev.captions[i] for i in keep)],
    )  # fmt: skip
