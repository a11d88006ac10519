"""Soak: many consecutive ``guard.check`` calls; memory and file handles stay flat.

On the bundled digits model: a reference of 270 real held-out digits, then ``--checks``
consecutive checks of 100-pair batches cycling over the other 270 digits (images as PNG bytes,
decoded every time). Reports RSS and open file descriptors after a warm-up and at the end,
and whether the first batch checked again at the end gives a byte-identical JSON report.

Usage:
    python benchmarks/bench_soak.py --checks 200
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import time

import synthguard as sg
from synthguard.datasets import DIGIT_NAMES, load_digits


def _rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=200)
    args = parser.parse_args()
    test = load_digits("test")
    reference = sg.Reference.build(
        test.images[:270], test.captions[:270], encoder="bundled:digits",
        labels=test.labels[:270], label_names=DIGIT_NAMES,
        label_templates="a handwritten digit {name}",
    )  # fmt: skip
    guard = sg.Guard(reference)
    encoded = []
    for image in test.images[270:]:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append(buffer.getvalue())

    def batch(k: int) -> sg.PairBatch:
        rows = [(k * 37 + j) % 270 for j in range(100)]
        return sg.PairBatch([encoded[r] for r in rows], [test.captions[270 + r] for r in rows],
                            labels=[test.labels[270 + r] for r in rows])  # fmt: skip

    first = guard.check(batch(0)).to_json()
    for k in range(5):  # warm-up: caches, allocator pools, the nulls of the sizes seen
        guard.check(batch(k))
    rss_start, fds_start = _rss_mib(), _open_fds()
    start = time.perf_counter()
    for k in range(args.checks):
        guard.check(batch(k))
    seconds = time.perf_counter() - start
    rss_end, fds_end = _rss_mib(), _open_fds()
    again = guard.check(batch(0)).to_json()
    print(json.dumps({
        "date": datetime.date.today().isoformat(),
        "machine": platform.machine(),
        "checks": args.checks,
        "seconds_per_check": round(seconds / args.checks, 4),
        "rss_mib_after_warmup": round(rss_start, 1),
        "rss_mib_at_end": round(rss_end, 1),
        "open_fds_after_warmup": fds_start,
        "open_fds_at_end": fds_end,
        "identical_report_for_the_same_batch": first == again,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
