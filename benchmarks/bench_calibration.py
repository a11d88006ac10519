"""Calibration benchmark: the batch tests' null, stacked path against the per-resample path.

The null at one batch size (1,024 rows, d = 512, a 10,000-row support, R = 1,000 by default)
is what a guard computes on its first check at that size. Measured in one run, on the same
support and the same seed (so the same resamples):

1. the per-resample path (``batch_null_exact``: ``collapse_metrics`` per resample, float64),
   with default torch threads, on the first ``--exact-resamples`` resamples (it is too slow
   for all of them; its time per resample is scaled to R and marked as such);
2. the stacked path (``batch_null``) with 1 and 2 worker threads, all R resamples, and the
   largest difference from the per-resample values on the shared resamples;
3. with ``--busy``: both again while a stand-in trainer (a process multiplying matrices with
   default torch threads) keeps the cores busy: the thread budget's effect;
4. the floor: one resample's dense linear algebra alone (three ``d × d`` eigenvalue problems,
   the ``m × m`` Gram, the ``d × d`` outer product, the Fréchet distance's Cholesky factor and
   two products), float32, one thread: what any exact CPU path with these statistics pays.

Usage:
    python benchmarks/bench_calibration.py                     # the issue's setting
    python benchmarks/bench_calibration.py --busy --resamples 200
    python benchmarks/bench_calibration.py --support 3000 --rows 256 --dim 128
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import platform
import time
from typing import Any

import torch

import synthguard as sg
from synthguard.checks import RESAMPLED_TESTS, batch_null, batch_null_exact


def _mixture(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit image rows from 50 clusters and noisy caption rows (CLIP ViT-B-32's shape)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(50, d, generator=gen)
    image = centres[torch.randint(0, 50, (n,), generator=gen)] + 1.5 * torch.randn(
        n, d, generator=gen
    )
    text = image + 0.8 * torch.randn(n, d, generator=gen)
    return (
        torch.nn.functional.normalize(image, dim=1),
        torch.nn.functional.normalize(text, dim=1),
    )


def _trainer(stop: Any) -> None:
    """A stand-in training job: matrix products with default torch threads until stopped."""
    x = torch.randn(1500, 1500)
    while not stop.is_set():
        x = torch.tanh(x @ x / 1500.0)


def _time(function: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def _floor(rows: int, dim: int, repeats: int = 8) -> dict[str, float]:
    """Seconds per resample of the dense linear algebra alone, stacked by 4 as the null runs."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(4, rows, dim, generator=gen), dim=2)
    outer = x.transpose(1, 2) @ x / rows
    spd = outer + 1e-3 * torch.eye(dim)
    parts = {
        "eigvalsh_x3": lambda: [torch.linalg.eigvalsh(outer) for _ in range(3)],
        "gram": lambda: x @ x.transpose(1, 2),
        "outer": lambda: x.transpose(1, 2) @ x,
        "cholesky_and_2_products": lambda: (lambda f: f.transpose(1, 2) @ outer @ f)(
            torch.linalg.cholesky_ex(spd)[0]
        ),
    }
    out = {}
    for name, part in parts.items():
        part()
        seconds, _ = _time(lambda p=part: [p() for _ in range(repeats)])
        out[f"{name}_ms"] = round(seconds / repeats / 4 * 1e3, 1)
    out["total_ms"] = round(sum(out.values()), 1)
    return out


def _run(ctx: Any, args: argparse.Namespace, label: str) -> dict[str, Any]:
    size, seed, resamples = args.rows, args.seed, args.resamples
    exact_s, exact = _time(lambda: batch_null_exact(ctx, size, args.exact_resamples, seed))
    out: dict[str, Any] = {
        "setting": label,
        "exact_per_resample_s": round(exact_s / args.exact_resamples, 4),
        "exact_scaled_to_R_s": round(exact_s / args.exact_resamples * resamples, 1),
        "exact_torch_threads": torch.get_num_threads(),
    }
    for threads in (1, 2):
        seconds, fast = _time(lambda t=threads: batch_null(ctx, size, resamples, seed, threads=t))
        out[f"stacked_threads{threads}_s"] = round(seconds, 2)
        out[f"speed_up_threads{threads}"] = round(out["exact_scaled_to_R_s"] / seconds, 1)
        shared = fast[: args.exact_resamples]
        worst = 0.0
        for j, _ in enumerate(RESAMPLED_TESTS):
            a, b = shared[:, j], exact[:, j]
            finite = ~(a.isnan() | b.isnan())
            if finite.any():
                scale = float(b[finite].abs().max()) or 1.0
                worst = max(worst, float((a[finite] - b[finite]).abs().max()) / scale)
        out["max_relative_difference"] = f"{worst:.1e}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--support", type=int, default=10_000, help="support rows")
    parser.add_argument("--rows", type=int, default=1024, help="batch size of the null")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--exact-resamples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--busy", action="store_true", help="also with a busy stand-in trainer")
    args = parser.parse_args()

    image, text = _mixture(args.support, args.dim, 0)
    reference = sg.Reference.from_embeddings(image, text, support_size=args.support)
    ctx = reference.batch_context(sg.GuardConfig().alpha)
    tables_s, _ = _time(
        lambda: (
            ctx.coverage_neighbours,
            ctx.coverage_members,
            ctx.coverage_member_offsets,
            ctx.cmmd_sums,
        )
    )
    threads = torch.get_num_threads()
    floor = _floor(args.rows, args.dim)
    torch.set_num_threads(threads)
    results = [_run(ctx, args, "idle machine")]
    if args.busy:
        spawn = multiprocessing.get_context("spawn")  # a fork after OpenMP use can hang
        stop = spawn.Event()
        trainer = spawn.Process(target=_trainer, args=(stop,))
        trainer.start()
        try:
            results.append(_run(ctx, args, "busy machine (a trainer on every core)"))
        finally:
            stop.set()
            trainer.join()
    print(json.dumps({
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cores": torch.get_num_threads(),
        "support": reference.n_support,
        "accepted_support": int(ctx.pool.numel()),
        "rows": args.rows,
        "dim": args.dim,
        "resamples": args.resamples,
        "one_off_tables_s": round(tables_s, 2),
        "floor_per_resample_one_thread": floor,
        "floor_at_R_on_2_cores_s": round(floor["total_ms"] * args.resamples / 2e3, 1),
        "results": results,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
