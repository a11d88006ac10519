"""Metric benchmark: synthguard's exact fast forms against the peer implementations, in one run.

1. **Vendi score.** The d×d dual form (``synthguard.functional.vendi_score``) against the
   ``vendi-score`` package's n×n kernel eigendecomposition (``vendi.score_X``).
2. **PRDC.** Blockwise precision/recall/density/coverage (``synthguard.functional.prdc``)
   against ``prdc.compute_prdc``, which holds three n×n distance matrices (the value column
   shows the density, the only one of the four that counts every ball membership).
   ``bench_prdc.py`` adds synthguard's float64 definition and the 20,000-row size.
3. **Fréchet distance.** From statistics by symmetric eigendecompositions
   (``synthguard.functional.frechet_distance``) against pytorch-fid's formula with
   ``scipy.linalg.sqrtm(Σ₁Σ₂)``; both start from precomputed moments.

Every case runs in a fresh process (``spawn``) so its peak resident memory is its own: after
the inputs exist and one untimed warm-up call, the peak is reset through
``/proc/self/clear_refs`` and the table reports ``VmHWM`` minus the resident size before the
timed calls. Times are the best of ``--repeats`` runs (one run when a call takes over 2 s).
Inputs are float32, as encoders produce them.

Usage:
    python benchmarks/bench_metrics.py                 # the documented sizes
    python benchmarks/bench_metrics.py --quick         # small sizes, seconds
    python benchmarks/bench_metrics.py --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _rss_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _data(n: int, d: int, seed: int, unit: bool = True) -> np.ndarray:
    """CLIP-like rows: a shared direction (fixed across seeds) plus noise drawn from ``seed``."""
    base = np.random.default_rng(12345).normal(size=d)
    x = (np.random.default_rng(seed).normal(size=(n, d)) + 1.5 * base).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True) if unit else x


def _prepare(case: str, n: int, d: int) -> tuple[Callable[[], float], str]:
    """The call to time and a label; inputs are built here, before the peak is reset."""
    import torch

    import synthguard.functional as F

    if case.startswith("vendi"):
        x = _data(n, d, 0)
        if case == "vendi:synthguard":
            return lambda: F.vendi_score(x), "dual d×d, float64"
        from vendi_score import vendi

        return lambda: float(vendi.score_X(x)), "vendi.score_X, n×n"
    if case.startswith("prdc"):
        real, fake = _data(n, d, 1), _data(n, d, 2)
        if case == "prdc:synthguard":
            return (
                lambda: F.prdc(real, fake, k=5).density,
                "float32 blocks, certified float64 answers",
            )
        import prdc as prdc_pkg

        def peer() -> float:
            with contextlib.redirect_stdout(io.StringIO()):
                out = prdc_pkg.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
            return float(out["density"])

        return peer, "prdc.compute_prdc, n×n"
    # Fréchet distance from precomputed moments of n rows each.
    from synthguard.stats import Moments

    a = _data(n, d, 3, unit=False).astype(np.float64)
    b = (_data(n, d, 4, unit=False) * 1.1).astype(np.float64)
    if case == "fd:synthguard":
        ma = Moments(n, torch.from_numpy(a.sum(0)), torch.from_numpy(a.T @ a))
        mb = Moments(n, torch.from_numpy(b.sum(0)), torch.from_numpy(b.T @ b))
        return lambda: F.frechet_distance(ma, mb), "symmetric eigh, from sums"
    import scipy.linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)

    def pytorch_fid() -> float:
        covmean = scipy.linalg.sqrtm(s1.dot(s2)).real
        diff = mu1 - mu2
        return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))

    return pytorch_fid, "scipy sqrtm(Σ₁Σ₂) (pytorch-fid)"


def _run_case(case: str, n: int, d: int, repeats: int, threads: int) -> dict[str, Any]:
    import warnings

    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    fn, label = _prepare(case, n, d)
    fn()  # warm-up: BLAS/LAPACK buffers and lazy initialisation are not the metric's memory
    reset = _reset_peak()
    before = _rss_kib("VmRSS")
    times, value = [], float("nan")
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
        if times[-1] > 2.0:
            break
    peak = _rss_kib("VmHWM")
    peak_mib = (peak - before) / 1024 if reset and peak and before else None
    return {
        "case": case,
        "label": label,
        "seconds": min(times),
        "peak_mib": peak_mib,
        "value": value,
    }


def _measure(case: str, n: int, d: int, repeats: int, threads: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_run_case, (case, n, d, repeats, threads))


def _fmt_mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vendi-n", default="1000,4000", help="comma-separated n for Vendi")
    parser.add_argument("--prdc-n", type=int, default=5000, help="rows of real and of fake")
    parser.add_argument("--fd-d", default="512,2048", help="comma-separated d for the FD")
    parser.add_argument("--fd-n", type=int, default=10000, help="rows behind each FD moment")
    parser.add_argument("--d", type=int, default=512, help="dimension for Vendi and PRDC")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="per side")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.vendi_n, args.prdc_n, args.fd_d, args.fd_n, args.d = "300", 600, "64", 2000, 64

    # Spawned children read these before importing numpy/scipy: both sides get the same threads.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    # A fixed mmap threshold makes glibc return every large freed block to the OS at once, so
    # the warm-up call leaves no resident heap behind to hide the measured call's peak.
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "131072"
    import torch

    rows = []
    plan = [("vendi", n, args.d) for n in map(int, args.vendi_n.split(","))]
    plan += [("prdc", args.prdc_n, args.d)]
    plan += [("fd", args.fd_n, d) for d in map(int, args.fd_d.split(","))]
    for metric, n, d in plan:
        ours = _measure(f"{metric}:synthguard", n, d, args.repeats, args.threads)
        peer = _measure(f"{metric}:peer", n, d, args.repeats, args.threads)
        rows.append({"metric": metric, "n": n, "d": d, "synthguard": ours, "peer": peer})

    print(f"# synthguard metric benchmark ({time.strftime('%Y-%m-%d')})\n")
    print(
        f"{_cpu_name()}, {os.cpu_count()} CPUs, "
        f"{args.threads} threads per side, torch {torch.__version__}, numpy {np.__version__}\n"
    )
    print(
        "| metric | n | d | synthguard (s) | peer (s) | speed-up | synthguard peak (MiB) "
        "| peer peak (MiB) | value | Δ value (abs) | peer |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        ours, peer = row["synthguard"], row["peer"]
        print(
            f"| {row['metric']} | {row['n']} | {row['d']} | {ours['seconds']:.3f} "
            f"| {peer['seconds']:.3f} | {peer['seconds'] / ours['seconds']:.1f}× "
            f"| {_fmt_mib(ours['peak_mib'])} | {_fmt_mib(peer['peak_mib'])} "
            f"| {ours['value']:.6g} | {abs(ours['value'] - peer['value']):.2e} | {peer['label']} |"
        )
    print(
        "\nInputs are float32 unit vectors, as encoders emit them. synthguard computes in float64"
        " (PRDC: float32 distances, float64 wherever rounding could decide a ball membership);"
        " the Vendi and PRDC peers compute in the input's float32, which accounts for most of"
        " the value difference (Vendi score, PRDC density). Both FD sides start from the same"
        " float64 moments. Peak: resident-memory high-water mark of the call alone."
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
