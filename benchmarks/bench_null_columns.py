"""The stacked null's cost by column: milliseconds per resample of each group of batch tests.

One batch size (1,024 rows, d = 512, a 10,000-row support: ``bench_calibration.py``'s data),
one torch thread, float32, ``--resamples`` resamples in stacks of 4 as the null runs them. It
uses only what the stacked path has had since it was written (``_Tables``, ``_values``), so
the same script times an older checkout for a before/after comparison in one session:

    git worktree add /tmp/before <commit>
    PYTHONPATH=/tmp/before/src .venv/bin/python benchmarks/bench_null_columns.py
    .venv/bin/python benchmarks/bench_null_columns.py

Each group includes what every column pays (drawing sums of the resample: the first line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_calibration import _mixture

import synthguard as sg
from synthguard.checks import _resample
from synthguard.checks._null import draws

GROUPS = {
    "moments only (alignment, variance)": {"alignment_shift", "variance_ratio"},
    "vendi_ratio": {"vendi_ratio"},
    "frechet_distance": {"frechet_distance"},
    "cmmd": {"cmmd"},
    "coverage, density": {"coverage", "density"},
    "all default columns": set(_resample.RESAMPLED_TESTS) - _resample.OPTIONAL_COLUMNS,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    image, text = _mixture(10_000, 512, 0)
    ref = sg.Reference.from_embeddings(image, text, support_size=10_000)
    ctx = ref.batch_context(sg.GuardConfig().alpha)
    idx = draws(ctx, 1024, args.resamples + 4, 0)
    tables = _resample._Tables.build(ctx, torch.device("cpu"), torch.float32)
    out = {"synthguard": str(Path(sg.__file__).parent), "resamples": args.resamples}
    for name, wanted in GROUPS.items():
        _resample._values(tables, idx[:4], wanted)  # warm-up, and the context's tables
        start = time.perf_counter()
        for s in range(4, args.resamples + 4, 4):
            _resample._values(tables, idx[s : s + 4], wanted)
        out[name] = round((time.perf_counter() - start) / args.resamples * 1e3, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
