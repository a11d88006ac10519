"""Snapshot the guard's decisions on fixed scenarios, or compare two snapshots.

For refactors that must not change behaviour: run it on two checkouts and diff.

    PYTHONPATH=/path/to/old/src python scripts/decision_snapshot.py old.json
    python scripts/decision_snapshot.py new.json
    python scripts/decision_snapshot.py --diff old.json new.json

Scenarios (bundled digits, offline): a 300-pair labelled reference; a 100-pair held-out batch
with wrong captions, wrong labels and a duplicate, under three configurations; a mode-collapsed
batch of embeddings; the monitor's generation metrics. ``--diff`` prints every field that
differs beyond 1e-12 relative (keys only one side has are listed too).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def snapshot(path: str) -> None:
    import torch

    import synthguard as sg
    from synthguard.datasets import DIGIT_NAMES, load_digits
    from synthguard.monitor import generation_metrics

    torch.set_num_threads(1)
    test = load_digits("test")
    enc = sg.load_encoder("bundled:digits")
    ref = sg.Reference.build(
        test.images[:300], test.captions[:300], encoder=enc, labels=test.labels[:300],
        label_names=DIGIT_NAMES, label_templates="a handwritten digit {name}",
    )  # fmt: skip
    captions, labels = list(test.captions[300:400]), list(test.labels[300:400])
    for i in range(0, 100, 7):
        captions[i] = test.captions[(i + 13) % 300]
    for i in range(0, 100, 11):
        labels[i] = (labels[i] + 3) % 10
    images = list(test.images[300:400])
    images[5] = images[6]
    batch = sg.PairBatch(images, captions, labels=labels)
    configs = {
        "default": sg.GuardConfig(n_resamples=199, alpha_batch=0.05),
        "reject_flag": sg.GuardConfig(
            n_resamples=199, alpha_batch=0.05, label_policy="reject",
            batch_tests=("coverage", "duplicate_rate", "flag_rate"),
        ),
        "keep_alpha10": sg.GuardConfig(
            n_resamples=199, alpha=0.1, alpha_batch=0.05, label_policy="keep"
        ),
    }  # fmt: skip
    out: dict[str, Any] = {n: sg.Guard(ref, c).check(batch).to_dict() for n, c in configs.items()}
    img, txt = enc.encode_images(test.images[300:364]), enc.encode_texts(test.captions[300:364])
    rows = [0, 1, 2, 3] * 16
    out["collapsed"] = (
        sg.Guard(ref, configs["default"])
        .check_embeddings(img[rows], txt[rows], labels=[test.labels[300 + i] for i in rows])
        .to_dict()
    )
    out["monitor"] = generation_metrics(ref, img.double(), txt.double())
    with open(path, "w") as handle:
        json.dump(out, handle, indent=1, default=str)
    print(f"wrote {path} with {sg.__file__}")


def diff(old_path: str, new_path: str) -> int:
    with open(old_path) as a, open(new_path) as b:
        old, new = json.load(a), json.load(b)
    found: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if key not in a or key not in b:
                    found.append(f"{where}/{key}: only in {'new' if key in b else 'old'}")
                else:
                    walk(a[key], b[key], f"{where}/{key}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{where}[{i}]")
        elif isinstance(a, float) and isinstance(b, float):
            if a != b and abs(a - b) > 1e-12 * max(1.0, abs(a)):
                found.append(f"{where}: {a!r} -> {b!r}")
        elif a != b:
            found.append(f"{where}: {a!r} -> {b!r}")

    walk(old, new, "")
    print("\n".join(found) or "identical")
    return 1 if found else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="snapshot to write, or two to --diff")
    parser.add_argument("--diff", action="store_true", help="compare two snapshots")
    args = parser.parse_args()
    if args.diff:
        return diff(*args.paths)
    snapshot(args.paths[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
