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
    return {"sums": stats.flat_sums().numel() * 8, "samples": 2 * sample_size * (dim + 4) * 8,
            "world": world}  # fmt: skip


# -- 3. Ray Data ---------------------------------------------------------------------------


def _png_rows(n: int) -> list[dict[str, Any]]:
    """Real photo crops (bench_embed's) as PNG bytes, with captions and unique ids."""
    import sys

    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_embed import _photos

    out = []
    for i, photo in enumerate(_photos(n, 224)):
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, format="PNG")
        out.append({"image": buffer.getvalue(), "caption": f"a photo, crop {i}", "id": f"r{i}"})
    return out


def _digit_rows(n: int) -> list[dict[str, Any]]:
    """The bundled digits (8×8, PNG bytes) cycled to ``n`` rows with unique ids."""
    from synthguard.datasets import load_digits

    digits = load_digits("train")
    encoded = []
    for image in digits.images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    m = len(encoded)
    return [{"image": encoded[i % m], "caption": digits.captions[i % m], "id": f"r{i}"}
            for i in range(n)]  # fmt: skip


def _actor_rss(out: dict[str, Any]) -> dict[str, Any]:
    out["rss"] = np.full(len(out["id"]), _peak_rss_mib())
    out["pid"] = np.full(len(out["id"]), os.getpid())
    return out


def _rss_by_actor(ds: Any) -> list[float]:
    table = ds.select_columns(["pid", "rss"]).to_pandas()
    return sorted(table.groupby("pid")["rss"].max().round(0).tolist())


def bench_ray_embed(spec: str, items: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    """``integrations.ray.embed``'s actor class on PNG rows, with 1 and 2 actors."""
    import ray

    from synthguard.integrations import ray as sg_ray

    class Embedder(sg_ray._Embedder):  # records each actor's peak RSS
        def __call__(self, b: dict[str, np.ndarray]) -> dict[str, Any]:
            return _actor_rss(super().__call__(b))

    rows = len(items)
    results: dict[str, Any] = {}
    for workers in (1, 2):
        ds = ray.data.from_items(items, override_num_blocks=max(4, rows // batch))
        start = time.perf_counter()
        embedded = ds.map_batches(
            Embedder, fn_constructor_kwargs={"spec": spec, "image_column": "image",
                                             "caption_column": "caption"},
            batch_size=batch, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
        ).materialize()  # fmt: skip
        seconds = time.perf_counter() - start
        results[str(workers)] = {"rows_per_s": rows / seconds, "seconds": seconds,
                                 "peak_rss_mib_per_actor": _rss_by_actor(embedded)}  # fmt: skip
    return results


def bench_ray_audit(rows: int, batch: int, support: int) -> dict[str, Any]:
    """The steps of ``integrations.ray.audit`` (timed one by one) on d = 512 embeddings."""
    import ray

    from synthguard.guard._pool import PoolSpec, PoolState, block_plan, pool_report
    from synthguard.integrations import ray as sg_ray

    class Decider(sg_ray._Decider):
        def __call__(self, b: dict[str, np.ndarray]) -> dict[str, Any]:
            return _actor_rss(super().__call__(b))

    ref = sg.Reference.from_embeddings(*_mixture(support, seed=0), support_size=support)
    image, text = _mixture(rows, seed=1)
    ds = ray.data.from_items(
        [{"image_embedding": image[i].float().numpy(), "text_embedding": text[i].float().numpy(),
          "id": i} for i in range(rows)],
        override_num_blocks=max(4, rows // batch),
    ).materialize()  # fmt: skip
    config = sg.GuardConfig(n_resamples=999, max_batch_rows=512)
    verdict = block_plan(ref, config, per_sample_only=False)
    spec = PoolSpec.of(block_plan(ref, config))
    blob = ray.put(ref.to_bytes())
    results: dict[str, Any] = {}
    null_s = 0.0
    for workers in (1, 2):
        start = time.perf_counter()
        decided = ds.map_batches(
            Decider, fn_constructor_kwargs={"reference": blob, "config": config,
                                            "id_column": "id", "label_column": None},
            batch_size=batch, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
        ).materialize()  # fmt: skip
        decide_s = time.perf_counter() - start
        merged = decided.aggregate(sg_ray._merge_stats(spec, "id", None))[sg_ray._AGGREGATE]
        aggregate_s = time.perf_counter() - start - decide_s
        first = time.perf_counter()
        report = pool_report(verdict, PoolState.from_bytes(merged))  # the null: once
        verdict_s = time.perf_counter() - first
        if workers == 1:
            first = time.perf_counter()
            pool_report(verdict, PoolState.from_bytes(merged))
            verdict_s, null_s = time.perf_counter() - first, verdict_s
        total = decide_s + aggregate_s + verdict_s
        results[str(workers)] = {
            "decide_s": decide_s, "aggregate_s": aggregate_s, "verdict_s": verdict_s,
            "rows_per_s": rows / total, "peak_rss_mib_per_actor": _rss_by_actor(decided),
            "accepted": report.accepted, "n_accepted": report.n_accepted,
        }  # fmt: skip
    results["null_s"] = null_s
    return results


def bench_ray(rows: int, batch: int, model_rows: int, support: int) -> dict[str, Any]:
    import ray
    from bench_embed import _build_models  # benchmarks/ is on sys.path when run as a script

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        oc_dir, _ = _build_models("vitb32", Path(folder))
        out["embed ViT-B-32 size"] = bench_ray_embed(
            f"openclip:local-dir:{oc_dir}", _png_rows(model_rows), batch=32
        )
    out["embed bundled:digits"] = bench_ray_embed("bundled:digits", _digit_rows(rows), batch)
    out["audit d=512"] = bench_ray_audit(rows, batch, support)
    ray.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=32000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--model-rows", type=int, default=384)
    parser.add_argument("--support", type=int, default=10_000)
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
        ray_results = bench_ray(args.rows, args.batch, args.model_rows, args.support)
        _print_ray(ray_results)
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


def _print_ray(ray_results: dict[str, Any]) -> None:
    print("\n## Ray Data, 1 vs 2 actors")
    print("| step | actors | rows/s | speed-up | seconds | peak RSS per actor (MiB) |")
    print("|---|---|---|---|---|---|")
    for step, by_workers in ray_results.items():
        by_workers = {k: v for k, v in by_workers.items() if k in ("1", "2")}
        base = by_workers["1"]["rows_per_s"]
        for w in ("1", "2"):
            r = by_workers[w]
            seconds = r.get("seconds") or r["decide_s"] + r["aggregate_s"] + r["verdict_s"]
            parts = ""
            if "decide_s" in r:
                parts = (f" (decide {r['decide_s']:.1f} + merge {r['aggregate_s']:.1f} + "
                         f"verdict {r['verdict_s']:.2f})")  # fmt: skip
            print(f"| {step} | {w} | {r['rows_per_s']:.0f} | {r['rows_per_s'] / base:.2f}× | "
                  f"{seconds:.1f}{parts} | "
                  f"{', '.join(f'{x:.0f}' for x in r['peak_rss_mib_per_actor'])} |")  # fmt: skip
    null_s = ray_results["audit d=512"]["null_s"]
    print(f"(the audit verdict's one-off null, not in the rates: {null_s:.1f} s)")


if __name__ == "__main__":
    main()
