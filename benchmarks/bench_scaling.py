"""Scale-out benchmark: 1 vs 2 workers, inside training (torch.distributed) and offline (Ray).

Measured in one run, on this machine:

1. **torch.distributed** (gloo, CPU): ``Guard.check_embeddings`` of one batch of ``--batch``
   pairs (d = 512, a 50-cluster mixture like CLIP features) by one process, then split over
   two ranks with ``sync=True``. Reported: median seconds per check, pairs/s, peak RSS per
   process, and the bytes every rank sends into collectives per check (counted by wrapping
   ``all_gather``/``all_reduce``), at several batch sizes to show what grows with ``N``.
2. **EmbeddingStats.all_reduce** bytes at d = 512 (what a metrics sync costs per step).
3. **Ray Data** (local instance): ``integrations.ray.embed`` with the bundled digits encoder,
   then ``integrations.ray.audit``, with ``concurrency`` 1 and 2 actors: rows/s and the peak
   RSS of each actor process.

Usage:
    python benchmarks/bench_scaling.py                 # about 3 minutes on 2 cores
    python benchmarks/bench_scaling.py --rows 4000 --batch 1024
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp

import synthguard as sg

DIM = 512
CONFIG = sg.GuardConfig(alpha_batch=0.05, n_resamples=199, max_batch_rows=512)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1)


def _mixture(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.randn(50, DIM, generator=torch.Generator().manual_seed(0)) * 0.6
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, 50, (n,), generator=gen)
    image = centres[pick] + 1.5 * torch.randn(n, DIM, generator=gen)
    return _unit(image), _unit(image + 0.8 * torch.randn(n, DIM, generator=gen))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- 1. torch.distributed ------------------------------------------------------------------


def _count_bytes(log: list[int]) -> None:
    """Wrap the collectives the guard uses so every rank logs the bytes it contributes."""
    import torch.distributed as dist

    gather, reduce = dist.all_gather, dist.all_reduce

    def all_gather(out: list[torch.Tensor], tensor: torch.Tensor, **kw: Any) -> Any:
        log.append(tensor.numel() * tensor.element_size())
        return gather(out, tensor, **kw)

    def all_reduce(tensor: torch.Tensor, **kw: Any) -> Any:
        log.append(tensor.numel() * tensor.element_size())
        return reduce(tensor, **kw)

    dist.all_gather, dist.all_reduce = all_gather, all_reduce  # type: ignore[assignment]


def _dist_worker(rank: int, world: int, folder: str, sizes: list[int], repeats: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rdv", rank=rank,
                            world_size=world)  # fmt: skip
    log: list[int] = []
    _count_bytes(log)
    guard = sg.Guard(sg.Reference.load(f"{folder}/ref.safetensors"), CONFIG)
    out: dict[str, Any] = {}
    for n in sizes:
        image, text = _mixture(n, seed=1)
        rows = slice(rank * n // world, (rank + 1) * n // world)
        times = []
        for _ in range(repeats):
            log.clear()
            dist.barrier()
            start = time.perf_counter()
            report = guard.check_embeddings(image[rows], text[rows], ids=list(range(n))[rows],
                                            sync=world > 1)  # fmt: skip
            times.append(time.perf_counter() - start)
        out[str(n)] = {"seconds": statistics.median(times), "bytes": sum(log),
                       "collectives": len(log), "accepted": report.accepted}  # fmt: skip
    out["peak_rss_mib"] = _peak_rss_mib()
    Path(f"{folder}/dist{world}-{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


def bench_distributed(sizes: list[int], repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        image, text = _mixture(20_000, seed=0)
        ref = sg.Reference.from_embeddings(image, text)
        guard = sg.Guard(ref, CONFIG)
        for n in sizes:  # one-off nulls, cached in the reference file for the workers
            guard.check_embeddings(*_mixture(n, seed=1), ids=list(range(n)))
        ref.save(f"{folder}/ref.safetensors")
        results: dict[str, Any] = {}
        for world in (1, 2):
            if os.path.exists(f"{folder}/rdv"):
                os.remove(f"{folder}/rdv")
            mp.spawn(_dist_worker, args=(world, folder, sizes, repeats), nprocs=world, join=True)
            results[str(world)] = [
                json.loads(Path(f"{folder}/dist{world}-{r}.json").read_text()) for r in range(world)
            ]
    return results


def all_reduce_bytes(dim: int, sample_size: int, world: int) -> dict[str, int]:
    """Bytes one rank contributes to ``EmbeddingStats.all_reduce`` (sums, then samples)."""
    stats = sg.EmbeddingStats(dim, sample_size=sample_size)
    return {"sums": stats._flat_sums().numel() * 8, "samples": 2 * sample_size * (dim + 4) * 8,
            "world": world}  # fmt: skip


# -- 3. Ray Data ---------------------------------------------------------------------------


def _ray_rows(n: int) -> list[dict[str, Any]]:
    from synthguard.datasets import load_digits

    digits = load_digits("train")
    out = []
    for i in range(n):
        j = i % len(digits.images)
        buffer = io.BytesIO()
        digits.images[j].save(buffer, format="PNG")
        out.append({"image": buffer.getvalue(), "caption": digits.captions[j], "id": f"r{i}"})
    return out


def bench_ray(rows: int, batch: int) -> dict[str, Any]:
    import ray

    from synthguard.datasets import load_digits
    from synthguard.integrations import ray as sg_ray

    class Embedder(sg_ray._Embedder):  # records each actor's peak RSS
        def __call__(self, b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            out = super().__call__(b)
            out["rss"] = np.full(len(out["id"]), _peak_rss_mib())
            out["pid"] = np.full(len(out["id"]), os.getpid())
            return out

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    test = load_digits("test")
    ref = sg.Reference.build(test.images, test.captions, encoder="bundled:digits", ids=test.ids)
    config = sg.GuardConfig(n_resamples=999, max_batch_rows=512)
    items = _ray_rows(rows)
    results: dict[str, Any] = {}
    # A warm-up audit computes the one-off null (cached on ``ref``) before anything is timed.
    warm = ray.data.from_items(items[: batch * 2], override_num_blocks=2)
    warm = sg_ray.embed(warm, "bundled:digits", batch_size=batch)
    sg_ray.audit(warm, ref, config, batch_size=batch, id_column="id")
    for workers in (1, 2):
        ds = ray.data.from_items(items, override_num_blocks=max(4, rows // batch))
        start = time.perf_counter()
        embedded = ds.map_batches(
            Embedder, fn_constructor_kwargs={"spec": "bundled:digits", "image_column": "image",
                                             "caption_column": "caption"},
            batch_size=batch, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
        ).materialize()  # fmt: skip
        embed_s = time.perf_counter() - start
        start = time.perf_counter()
        result = sg_ray.audit(embedded, ref, config, batch_size=batch, id_column="id",
                              concurrency=workers)  # fmt: skip
        audit_s = time.perf_counter() - start
        seen = embedded.select_columns(["pid", "rss"]).to_pandas().groupby("pid")["rss"].max()
        results[str(workers)] = {
            "embed_rows_per_s": rows / embed_s, "audit_rows_per_s": rows / audit_s,
            "peak_rss_mib_per_actor": sorted(seen.round(0).tolist()),
            "accepted": result.report.accepted, "n_accepted": result.report.n_accepted,
        }  # fmt: skip
    ray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--only", choices=("all", "distributed", "ray"), default="all")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    meta = {"date": datetime.date.today().isoformat(), "machine": platform.processor()
            or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__}  # fmt: skip
    dist_results: dict[str, Any] = {}
    ray_results: dict[str, Any] = {}
    if args.only in ("all", "distributed"):
        dist_results = bench_distributed(args.sizes, args.repeats)
        _print_distributed(args.sizes, dist_results)
    if args.only in ("all", "ray"):
        ray_results = bench_ray(args.rows, args.batch)
        _print_ray(args.rows, args.batch, ray_results)
    print(f"\n{json.dumps(meta)}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "distributed": dist_results,
                                         "ray": ray_results}, indent=2))  # fmt: skip


def _print_distributed(sizes: list[int], dist_results: dict[str, Any]) -> None:
    print("## torch.distributed: guard.check_embeddings, 1 process vs 2 gloo ranks")
    print("| pairs | 1 proc s/check | 2 ranks s/check | speed-up | bytes sent per rank | "
          "collectives | peak RSS/proc MiB (1 / 2) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        one, two = dist_results["1"][0][str(n)], dist_results["2"]
        slowest = max(r[str(n)]["seconds"] for r in two)
        print(f"| {n} | {one['seconds']:.3f} | {slowest:.3f} | {one['seconds'] / slowest:.2f}× "
              f"| {two[0][str(n)]['bytes']:,} | {two[0][str(n)]['collectives']} | "
              f"{dist_results['1'][0]['peak_rss_mib']:.0f} / "
              f"{max(r['peak_rss_mib'] for r in two):.0f} |")  # fmt: skip
    print("\n## EmbeddingStats.all_reduce bytes per rank (sums + bottom-k samples)")
    for d in (512, 768, 1024):
        b = all_reduce_bytes(d, 1024, 2)
        print(f"d={d}: sums {b['sums']:,} B, samples (k=1024) {b['samples']:,} B")


def _print_ray(rows: int, batch: int, ray_results: dict[str, Any]) -> None:
    print(f"\n## Ray Data: {rows} digits rows, batch {batch}")
    print("| actors | embed rows/s | audit rows/s | peak RSS per actor (MiB) |")
    print("|---|---|---|---|")
    for w in ("1", "2"):
        r = ray_results[w]
        print(
            f"| {w} | {r['embed_rows_per_s']:.0f} | {r['audit_rows_per_s']:.0f} | "
            f"{', '.join(f'{x:.0f}' for x in r['peak_rss_mib_per_actor'])} |"
        )


if __name__ == "__main__":
    main()
