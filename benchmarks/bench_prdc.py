"""PRDC benchmark: synthguard's float32 path, its float64 definition and the ``prdc`` package.

One run, the same data for all three (CLIP-like unit rows in float32, as encoders emit them):

1. ``synthguard.functional.prdc``: float32 distance blocks, float64 recomputed only for the
   pairs within a rounding bound of a decision (``synthguard/functional/_knn.py``).
2. The float64 blockwise definition it must equal (``fidelity._prdc_exact``, what ``prdc``
   ran before), validation included.
3. ``prdc.compute_prdc`` (three n×n float32 distance matrices, ``np.partition``).

Each case runs in a fresh process (``spawn``) after one untimed warm-up call on a small input;
the peak is that process's resident high-water mark of the timed call alone, as in
``bench_metrics.py`` but with glibc's default allocator (a fixed mmap threshold would charge
every implementation for page faults on each temporary freed and allocated again). The table
reports seconds (best of ``--repeats``, one run when a call takes over 2 s), the CPU seconds of
that call (user + sys, all threads: a busy machine shows as wall ≫ CPU / threads), ratios,
peaks and whether the four values equal the float64 definition's.

Usage:
    python benchmarks/bench_prdc.py                  # n = 20,000 real + 20,000 fake, d = 512
    python benchmarks/bench_prdc.py --n 2000 --d 64  # seconds
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import multiprocessing
import os
import resource
import time
from typing import Any

from bench_metrics import _cpu_name, _data, _reset_peak, _rss_kib

CASES = ("synthguard", "float64", "prdc")
LABELS = {
    "synthguard": "synthguard.functional.prdc (float32 blocks, certified)",
    "float64": "float64 blockwise definition (the previous prdc)",
    "prdc": "prdc.compute_prdc 0.2 (n×n float32)",
}


def _call(case: str, real: Any, fake: Any, k: int) -> dict[str, float]:
    if case == "synthguard":
        import synthguard.functional as F

        return F.prdc(real, fake, k).to_dict()
    if case == "float64":
        from synthguard.functional import fidelity

        r, f, k, block = fidelity._validate(real, fake, k, 1024)
        return fidelity._prdc_exact(r, f, k, block).to_dict()
    import prdc

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints the sample sizes
        out = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    return {key: float(value) for key, value in out.items()}


def _run(case: str, n: int, d: int, k: int, repeats: int, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    real, fake = _data(n, d, 1), _data(n, d, 2)
    _call(case, _data(500, d, 3), _data(500, d, 4), k)  # warm-up: BLAS buffers, imports
    reset = _reset_peak()
    before = _rss_kib("VmRSS")
    times, cpu, values = [], [], {}
    for _ in range(repeats):
        start, used = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        values = _call(case, real, fake, k)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime)
        if times[-1] > 2.0:
            break
    peak = _rss_kib("VmHWM")
    return {
        "case": case,
        "seconds": min(times),
        "cpu_seconds": cpu[times.index(min(times))],  # user + sys, all threads
        "peak_mib": (peak - before) / 1024 if reset and peak and before else None,
        "values": {key: values[key] for key in ("precision", "recall", "density", "coverage")},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="rows of real and of fake")
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="per case")
    parser.add_argument("--cases", default=",".join(CASES), help="a subset, comma-separated")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # read by the spawned children: same threads
    import torch

    results = {}
    ctx = multiprocessing.get_context("spawn")
    for case in args.cases.split(","):
        with ctx.Pool(1) as pool:
            results[case] = pool.apply(
                _run, (case, args.n, args.d, args.k, args.repeats, args.threads)
            )
        print(f"{case}: {results[case]['seconds']:.2f} s", flush=True)

    reference = results.get("float64", results[next(iter(results))])["values"]
    print(f"\n# PRDC benchmark ({time.strftime('%Y-%m-%d')})\n")
    print(
        f"n = {args.n:,} real + {args.n:,} fake, d = {args.d}, k = {args.k}, CLIP-like unit "
        f"rows (float32). {_cpu_name()}, {os.cpu_count()} CPUs, {args.threads} threads, "
        f"torch {torch.__version__}.\n"
    )
    print("| implementation | seconds | CPU s | prdc package ÷ this | peak (MiB) | values |")
    print("|---|---:|---:|---:|---:|---|")
    peer = results["prdc"]["seconds"] if "prdc" in results else math.nan
    for case, row in results.items():
        values = row["values"]
        if values == reference:
            same = "identical to float64" if "float64" in results else "reference"
        else:
            gap = max(abs(values[key] - reference[key]) for key in reference)
            same = f"max |Δ| {gap:.2e} vs float64"
        peak = "n/a" if row["peak_mib"] is None else f"{row['peak_mib']:,.0f}"
        ratio = f"{peer / row['seconds']:.2f}×" if math.isfinite(peer) else "—"
        print(
            f"| {LABELS[case]} | {row['seconds']:.2f} | {row['cpu_seconds']:.1f} | {ratio} "
            f"| {peak} | {same} |"
        )
    if "synthguard" in results and "float64" in results:
        fast, slow = results["synthguard"]["seconds"], results["float64"]["seconds"]
        print(f"\nfloat32 path vs float64 definition: {slow / fast:.2f}× faster.")
    print("values:", json.dumps(reference))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
