"""GPU checks and numbers for the embedding engine, as one prepared script for a lent GPU.

What it checks (exits non-zero on a failed check) and measures:
1. bf16 and fp16 autocast embeddings agree with fp32 (min cosine >= 0.99) on ViT-B-32-sized
   random weights and real photos;
2. a real CUDA out-of-memory (batch 4096 under a 1% memory cap) is halved and retried, and
   the results equal the batch-256 results;
3. throughput, ViT-B-32 fp16, batch 256: bare ``encode_image`` on device tensors (the limit),
   synthguard from pre-decoded PIL images, and synthguard from JPEG files (decode-bound);
   compare the bare number with timm's published figure for the vision tower;
4. the batch tests' null on the GPU (``batch_null(device="cuda")``): 1,024 rows, d = 512, a
   10,000-row support, R = 1,000; its first resamples equal the CPU path's within
   ``FLOAT32_TOLERANCE``; seconds, and the CPU path's seconds per resample for the ratio;
5. PRDC at n = 100,000 real and 100,000 fake, d = 512, on the GPU: the fast path's values equal
   the float64 definition's (``_prdc_exact``, also on the GPU) exactly; seconds of both;
6. with two or more GPUs: the multi-process tests (``tests/test_distributed.py``,
   ``tests/test_distributed_guard.py``) with NCCL instead of gloo (``SYNTHGUARD_TEST_BACKEND``).

Usage (on the GPU machine, from the repository root, in the project's venv):
    python benchmarks/gpu_check.py --n-images 2048
    python benchmarks/gpu_check.py --only prdc,nccl    # some of the checks
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import synthguard as sg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_embed import _build_models, _photos, _write_jpegs

CHECKS = ("embed", "calibration", "prdc", "nccl")


def _timed(fn: Any) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--prdc-rows", type=int, default=100_000)
    parser.add_argument("--only", default=",".join(CHECKS))
    args = parser.parse_args()
    only = set(args.only.split(","))
    if only - set(CHECKS):
        parser.error(f"--only takes names from {','.join(CHECKS)}; got {args.only!r}")
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    failures = _embedding(args) if "embed" in only else 0
    if "calibration" in only:
        failures += _calibration()
    if "prdc" in only:
        failures += prdc_check(args.prdc_rows, torch.device("cuda"))
    if "nccl" in only:
        failures += _nccl()
    return 1 if failures else 0


def _embedding(args: argparse.Namespace) -> int:
    """Checks 1–3: precision agreement, the OOM back-off, throughput."""
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        oc_dir, _ = _build_models("vit-b-32", root)
        images = _photos(args.n_images, 256)
        paths = _write_jpegs(images, root)
        spec = f"openclip:local-dir:{oc_dir}"
        from PIL import Image

        pil = [Image.fromarray(a) for a in images]

        ref = sg.load_encoder(spec, device="cuda", precision="fp32", batch_size=args.batch_size)
        base = ref.encode_images(pil[:512])
        for precision in ("bf16", "fp16"):
            enc = sg.load_encoder(spec, device="cuda", precision=precision)
            cos = (enc.encode_images(pil[:512]) * base).sum(1).min().item()
            ok = cos >= 0.99
            failures += not ok
            print(f"[{'ok' if ok else 'FAIL'}] {precision} vs fp32: min cosine {cos:.5f}")

        # A real CUDA OOM without 100+ GB of host tensors: cap this process's share of the GPU.
        big = sg.load_encoder(spec, device="cuda", precision="fp32", batch_size=4096)
        many = (pil * (4096 // len(pil) + 1))[:4096]
        torch.cuda.set_per_process_memory_fraction(0.01)
        try:
            out = big.encode_images(many)
            same = torch.allclose(out[:512], base, atol=1e-4)
            failures += not same
            print(
                f"[{'ok' if same else 'FAIL'}] OOM back-off: batch 4096 -> {big.batch_size}, "
                "results equal to batch 256"
            )
        except sg.EncoderError as exc:
            failures += 1
            print(f"[FAIL] OOM back-off raised: {exc}")
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
            torch.cuda.empty_cache()

        enc = sg.load_encoder(spec, device="cuda", precision="fp16", batch_size=args.batch_size)
        model: Any = enc.module
        pixels = torch.stack([enc._backend.preprocess(p) for p in pil]).cuda()

        def bare() -> None:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
                for start in range(0, len(pixels), args.batch_size):
                    model.encode_image(pixels[start : start + args.batch_size])

        n = len(pil)
        captions = [f"a photo of object number {i} on a plain background" for i in range(n)]
        tokens = enc._backend.tokenize(captions)["text"].cuda()

        def bare_text() -> None:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
                for start in range(0, n, args.batch_size):
                    model.encode_text(tokens[start : start + args.batch_size])

        t_bare = _timed(bare)
        t_pil = _timed(lambda: enc.encode_images(pil))
        t_files = _timed(lambda: enc.encode_images(paths))
        t_bare_pairs = t_bare + _timed(bare_text)
        t_pairs = t_files + _timed(lambda: enc.encode_texts(captions))
        print("| path | per second | ratio to bare |")
        print("|---|---|---|")
        for name, t, bare_t in (
            ("bare image forward", t_bare, t_bare),
            ("synthguard PIL images", t_pil, t_bare),
            ("synthguard JPEG images", t_files, t_bare),
            ("bare image + text forward (pairs)", t_bare_pairs, t_bare_pairs),
            ("synthguard JPEG + caption (pairs)", t_pairs, t_bare_pairs),
        ):
            print(f"| {name} | {n / t:.0f} | {bare_t / t:.3f} |")
        met = t_bare_pairs / t_pairs >= 0.90 and n / t_pairs >= 20_000
        print(
            f"[goal {'met' if met else 'missed'}] pairs from JPEG files: {n / t_pairs:.0f}/s, "
            f"{t_bare_pairs / t_pairs:.2f} of the bare forward (goal: >= 20,000/s, >= 0.90)"
        )
    return failures


def _calibration() -> int:
    """Check 4: the null on the GPU, against the CPU path on the same draws."""
    from bench_calibration import _mixture

    from synthguard.checks import FLOAT32_TOLERANCE, RESAMPLED_TESTS, batch_null

    image, text = _mixture(10_000, 512, 0)
    ctx = sg.Reference.from_embeddings(image, text).batch_context(sg.GuardConfig().alpha)
    start = time.perf_counter()
    cpu = batch_null(ctx, 1024, 16, 0, threads=torch.get_num_threads())
    cpu_each = (time.perf_counter() - start) / 16
    batch_null(ctx, 1024, 64, 0, device="cuda")  # warm-up: tables, kernels
    torch.cuda.synchronize()
    start = time.perf_counter()
    gpu = batch_null(ctx, 1024, 1000, 0, device="cuda")
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    worst = 0.0
    for j in range(len(RESAMPLED_TESTS)):
        a, b = gpu[:16, j], cpu[:, j]
        finite = ~b.isnan()
        if finite.any():
            scale = max(float(b[finite].abs().max()), 1e-12)
            worst = max(worst, float((a[finite] - b[finite]).abs().max()) / scale)
    ok = worst <= FLOAT32_TOLERANCE
    print(
        f"[{'ok' if ok else 'FAIL'}] null on the GPU: 1024 rows, R = 1000 in {seconds:.1f} s "
        f"(CPU path {cpu_each:.3f} s per resample, {cpu_each * 1000 / seconds:.0f}x); "
        f"largest relative difference from the CPU path {worst:.1e}"
    )
    return 0 if ok else 1


def prdc_check(n: int, device: torch.device, dim: int = 512) -> int:
    """Check 5: PRDC's fast path (float32 blocks, float64 near the radii) against the float64
    definition on ``device``, n real and n fake rows; 1 when a value differs or the fast path
    declines (``prdc()`` would then quietly run the definition, and compare it with itself)."""
    from synthguard.functional import _knn
    from synthguard.functional._common import DEFAULT_BLOCK_SIZE
    from synthguard.functional.fidelity import _TIE_RTOL, _prdc_exact, _result, _validate

    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(100, dim, generator=gen)
    real = centres[torch.randint(0, 100, (n,), generator=gen)] + torch.randn(n, dim, generator=gen)
    fake = centres[torch.randint(0, 100, (n,), generator=gen)] + torch.randn(n, dim, generator=gen)
    r, f, k, block = _validate(real.to(device), fake.to(device), 5, DEFAULT_BLOCK_SIZE)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    _knn.fast_prdc(r[:1000], f[:1000], k, block, _TIE_RTOL)  # warm-up: CUDA context, cuBLAS
    sync()
    start = time.perf_counter()
    counts = _knn.fast_prdc(r, f, k, block, _TIE_RTOL)
    sync()
    fast_s = time.perf_counter() - start
    if counts is None:
        print(f"[FAIL] PRDC on {device}: the float32 path declined (TF32 or precision setting?)")
        return 1
    fast = _result(*counts, k=k)
    start = time.perf_counter()
    exact = _prdc_exact(r, f, k, block)
    sync()
    exact_s = time.perf_counter() - start
    same = fast.to_dict() == exact.to_dict()
    print(
        f"[{'ok' if same else 'FAIL'}] PRDC, n = {n:,} + {n:,}, d = {dim} on {device}: "
        f"{fast_s:.1f} s (float64 definition {exact_s:.1f} s, {exact_s / fast_s:.1f}x); "
        f"values {'identical' if same else f'differ: {fast.to_dict()} vs {exact.to_dict()}'}"
    )
    return 0 if same else 1


def _nccl() -> int:
    """Check 6: the gloo tests with NCCL, one rank per GPU (skipped with fewer than 2)."""
    import os
    import subprocess

    if torch.cuda.device_count() < 2:
        print(f"[skip] NCCL: {torch.cuda.device_count()} GPU; the tests need 2")
        return 0
    root = Path(__file__).resolve().parents[1]
    tests = ["tests/test_distributed.py", "tests/test_distributed_guard.py"]
    env = {**os.environ, "SYNTHGUARD_TEST_BACKEND": "nccl"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", *tests], cwd=root, env=env)
    print(f"[{'ok' if done.returncode == 0 else 'FAIL'}] NCCL: {' '.join(tests)}")
    return int(done.returncode != 0)


if __name__ == "__main__":
    sys.exit(main())
