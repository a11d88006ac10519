"""False-alarm rate of every batch test on real digits (random reference/batch splits).

One reference per trial (a resampled null is conditional on its reference). The suite's
``tests/test_false_alarms.py`` asserts these rates; this prints them with more trials.

Usage: .venv/bin/python scripts/false_alarms.py --trials 200 --resamples 199
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import synthguard as sg
from synthguard.datasets import DIGIT_NAMES, load_digits

SETTINGS = {  # name: (support rows, batch samples)
    "m/n=0.05": (1200, 64),
    "m/n=0.2": (1000, 215),
    "m/n=0.5": (1000, 500),
    "smallest": (1000, 11),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--resamples", type=int, default=199)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS))
    parser.add_argument("--seed", type=int, default=0, help="seed of the splits")
    args = parser.parse_args()
    torch.set_num_threads(1)
    enc = sg.load_encoder("bundled:digits")
    digits = load_digits("all")
    image = enc.encode_images(digits.images)
    text = enc.encode_texts(digits.captions)
    labels = torch.as_tensor(digits.labels)
    print("d =", image.shape[1])
    for name in args.settings:
        n, b = SETTINGS[name]
        rng = np.random.default_rng(args.seed)
        ps: dict[str, list[float]] = {}
        rejected, t0, rows = 0, time.time(), []
        for _ in range(args.trials):
            order = rng.permutation(image.shape[0])
            ref_idx, batch_idx = order[:n], order[n : n + b]
            ref = sg.Reference.from_embeddings(
                image[ref_idx],
                text[ref_idx],
                labels=labels[ref_idx],
                label_names=DIGIT_NAMES,
                encoder=enc,
                label_templates="a handwritten digit {name}",
            )
            cfg = sg.GuardConfig(
                n_resamples=args.resamples, alpha_batch=0.1, seed=int(rng.integers(1 << 30))
            )
            report = sg.Guard(ref, config=cfg).check_embeddings(
                image[batch_idx], text[batch_idx], labels=labels[batch_idx]
            )
            rejected += report.verdict != "accepted"
            rows.append(report.rows_tested)
            for key, metric in report.metrics.items():
                if metric.p_value is not None:
                    ps.setdefault(key, []).append(metric.p_value)
        print(
            f"\n{name}: n={n} batch={b} rows={sorted(set(rows))} trials={args.trials} "
            f"batch rejected {rejected / args.trials:.3f} ({time.time() - t0:.0f} s)"
        )
        for key, values in ps.items():
            v = np.asarray(values)
            print(
                f"  {key:22s} P(p<=.01)={np.mean(v <= 0.01):.3f} P(p<=.05)={np.mean(v <= 0.05):.3f}"
                f" P(p<=.2)={np.mean(v <= 0.2):.3f} mean p={v.mean():.3f}"
            )


if __name__ == "__main__":
    main()
