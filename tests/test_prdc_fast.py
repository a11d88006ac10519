"""The float32 PRDC / k-NN radii path against the float64 definition, decision for decision.

``F.prdc`` computes distances in float32 blocks and recomputes in float64 only the pairs within
a rounding bound of a decision (``synthguard.functional._knn``); ``_prdc_exact`` is the float64
definition. Every comparison here is exact (``==``), on data built to put many distances on or
near the radii: duplicates, copies of real samples, lattices, tight clusters, huge magnitudes.
``_knn._prdc`` raises where the bound cannot certify an answer, so the tests also say which
cases the float32 path itself decides and which it hands to float64.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import synthguard.functional as F
from synthguard._validation import as_embeddings
from synthguard.functional import _knn
from synthguard.functional import fidelity as fid

prdc_pkg = pytest.importorskip("prdc")


def exact(real: Any, fake: Any, k: int = 5, block: int = 1024) -> F.PRDCResult:
    r, f = as_embeddings("real", real), as_embeddings("fake", fake)
    return fid._prdc_exact(r, f, k, block)


def certified(real: Any, fake: Any, k: int = 5, block: int = 1024) -> F.PRDCResult:
    """The float32 path alone; raises ``_knn._Uncertain`` where it would hand over."""
    r, f = as_embeddings("real", real), as_embeddings("fake", fake)
    return fid._result(*_knn._prdc(r, f, k, block, fid._TIE_RTOL), k=k)


def clip_like(n: int, d: int, seed: int) -> np.ndarray:
    """Unit rows around a shared direction, as CLIP image embeddings (float32)."""
    base = np.random.default_rng(12345).normal(size=d)
    x = np.random.default_rng(seed).normal(size=(n, d)) + 1.5 * base
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@contextlib.contextmanager
def counting(name: str) -> Iterator[list[int]]:
    """Count the rows or pairs that reach ``_knn.<name>`` (the float64 recomputations)."""
    seen: list[int] = []
    original = getattr(_knn, name)

    def spy(*args: Any) -> Any:
        seen.append(int(args[0 if name == "sq_dists" else 1].shape[0]))
        return original(*args)

    mp = pytest.MonkeyPatch()
    mp.setattr(_knn, name, spy)
    try:
        yield seen
    finally:
        mp.undo()


@pytest.mark.parametrize(
    ("n_real", "n_fake", "d", "shift"), [(400, 300, 32, 0.0), (250, 500, 8, 0.6)]
)
def test_gaussian(n_real: int, n_fake: int, d: int, shift: float) -> None:
    rng = np.random.default_rng(d)
    real, fake = rng.normal(size=(n_real, d)), rng.normal(size=(n_fake, d)) * 1.2 + shift
    want = exact(real, fake)
    assert certified(real, fake) == want
    assert F.prdc(real, fake) == want
    assert F.prdc(real, fake, block_size=64) == exact(real, fake, block=64)


@pytest.mark.parametrize("block", [128, 1024])
def test_clip_like_unit_rows_float32_and_float64(block: int) -> None:
    real, fake = clip_like(1500, 128, 1), clip_like(1200, 128, 2)
    want = exact(real, fake, block=block)
    for r, f in [(real, fake), (torch.from_numpy(real).double(), torch.from_numpy(fake).double())]:
        assert certified(r, f, block=block) == want
        assert F.prdc(r, f, block_size=block) == want
    assert 0.3 < want.precision < 1.0 and 0.3 < want.coverage < 1.0  # not a trivial case


def test_duplicates_and_copies_of_real_samples() -> None:
    real = clip_like(300, 24, 3).astype(np.float64)
    real[50:56] = real[49]  # seven equal rows: their radius is 0
    real[100:103] = real[99]  # four: distance 0 is among the k+1 nearest
    near = clip_like(80, 24, 4) * 0.05 + real[150:230]
    fake = np.vstack([real[:60], real[:10], real[95:105], near])  # exact copies, some twice
    for k in (1, 3, 5):
        want = exact(real, fake, k)
        assert certified(real, fake, k) == want
        assert F.prdc(real, fake, k) == want
        assert F.prdc(fake, real, k) == exact(fake, real, k)
    # Every ball's k-th neighbour sits on its sphere; radius-0 balls hold nothing.
    assert F.prdc(real, real[::-1].copy()) == exact(real, real[::-1].copy())


def test_lattice_ties_are_decided_as_in_float64() -> None:
    # Integer points: many exactly equal distances per row, radii shared by many pairs.
    grid = np.stack(np.meshgrid(*[np.arange(5)] * 3), axis=-1).reshape(-1, 3).astype(np.float64)
    fake = np.vstack([grid[::2], grid[1::3] + 0.5, grid[:20]])
    for k in (1, 2, 5):
        assert F.prdc(grid, fake, k) == exact(grid, fake, k)
        assert F.prdc(fake, grid, k) == exact(fake, grid, k)
    # Lattice copies among continuous points: the float32 path settles the ties in float64.
    rng = np.random.default_rng(1)
    fake = np.vstack([rng.uniform(0, 4, size=(1500, 3)), grid[::3], grid[::7] + 0.5])
    with counting("_pair_sq") as pairs:
        for k in (1, 2, 5):
            want = exact(grid, fake, k)
            assert certified(grid, fake, k) == want
            assert F.prdc(grid, fake, k) == want
    assert sum(pairs) > 0


def test_clustered_data_near_the_radii() -> None:
    # Tight clusters of a few points each: within a cluster distances are ~1e-6 of the unit
    # spread, so float32 cannot order them; the float64 recomputation (rows and pairs) must.
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(40, 16))
    real = np.repeat(centres, 8, axis=0) + rng.normal(size=(320, 16)) * 1e-6
    fake = np.repeat(centres[::2], 6, axis=0) + rng.normal(size=(120, 16)) * 1e-6
    fake[:30] = real[:240:8]  # copies of cluster members
    for k in (3, 5, 7):
        want = exact(real, fake, k)
        assert F.prdc(real, fake, k) == want
    # A cluster larger than the candidates kept per row among spread rows: the float32 path
    # keeps its answer, recomputing the cluster's rows whole in float64.
    spread = rng.normal(size=(1000, 16))
    mixed = np.vstack([spread, centres[0] + rng.normal(size=(30, 16)) * 1e-6])
    with counting("sq_dists") as rows:
        want = exact(mixed, spread[::-1].copy())
        assert certified(mixed, spread[::-1].copy()) == want
    assert sum(rows) > 0
    assert F.prdc(mixed, spread[::-1].copy()) == want


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("block", [1, 2, 7, 1024])
def test_tiny_inputs(k: int, block: int) -> None:
    rng = np.random.default_rng(k + block)
    for n_real, n_fake in [(k + 1, k + 1), (k + 1, k + 4), (k + 3, k + 1)]:
        real, fake = rng.normal(size=(n_real, 3)), rng.normal(size=(n_fake, 3))
        want = exact(real, fake, k, block)
        assert certified(real, fake, k, block) == want
        assert F.prdc(real, fake, k, block_size=block) == want
        x = torch.from_numpy(real)
        fast = _knn.fast_radii_sq(as_embeddings("x", x), k, block)
        assert fast is not None
        torch.testing.assert_close(fast, fid._radii_sq_exact(x, k, block), rtol=0, atol=1e-14)


@pytest.mark.parametrize("scale", [1e-6, 1e6, 1e12])
def test_large_and_small_magnitudes(scale: float) -> None:
    real, fake = clip_like(500, 32, 5).astype(np.float64), clip_like(400, 32, 6).astype(np.float64)
    fake[:40] = real[:40]
    want = exact(real, fake)
    assert certified(real * scale, fake * scale) == want
    assert F.prdc(real * scale, fake * scale) == want
    assert exact(real * scale, fake * scale) == want  # power-free scales still round alike


def test_rows_far_from_the_origin_fall_back_or_agree() -> None:
    # A common offset of 1e8 against a unit spread: float64 itself rounds distances at ~1e-2,
    # so the float32 path must either certify every decision or leave them all to float64.
    rng = np.random.default_rng(8)
    real, fake = rng.normal(size=(300, 8)) + 1e8, rng.normal(size=(200, 8)) + 1e8
    assert F.prdc(real, fake) == exact(real, fake)
    with pytest.raises(_knn._Uncertain):
        certified(real, fake)


def test_reduced_precision_matmuls_use_float64() -> None:
    real, fake = clip_like(200, 16, 9), clip_like(150, 16, 10)
    r, f = as_embeddings("real", real), as_embeddings("fake", fake)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        assert not _knn.ieee_float32_matmul(torch.device("cpu"))
        assert _knn.fast_prdc(r, f, 5, 1024, fid._TIE_RTOL) is None
        assert _knn.fast_radii_sq(r, 5, 1024) is None
        assert F.prdc(real, fake) == exact(real, fake)
    finally:
        torch.set_float32_matmul_precision(previous)
    assert _knn.ieee_float32_matmul(torch.device("cpu"))


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    n_real=st.integers(2, 70),
    n_fake=st.integers(2, 70),
    d=st.integers(1, 12),
    k=st.integers(1, 6),
    block=st.integers(1, 80),
    seed=st.integers(0, 2**16),
    grid=st.booleans(),
)
def test_property_equal_to_float64(
    n_real: int, n_fake: int, d: int, k: int, block: int, seed: int, grid: bool
) -> None:
    k = min(k, n_real - 1, n_fake - 1) or 1
    if min(n_real, n_fake) <= k:
        return
    rng = np.random.default_rng(seed)
    if grid:  # small integers: exact ties everywhere
        real = rng.integers(0, 3, size=(n_real, d)).astype(np.float64)
        fake = rng.integers(0, 3, size=(n_fake, d)).astype(np.float64)
    else:
        real, fake = rng.normal(size=(n_real, d)), rng.normal(size=(n_fake, d)) + 0.3
    copies = rng.integers(0, min(n_real, n_fake) + 1)
    fake[:copies] = real[rng.choice(n_real, copies, replace=False)]
    want = exact(real, fake, k, block)
    assert F.prdc(real, fake, k, block_size=block) == want
    with contextlib.suppress(_knn._Uncertain):  # ties everywhere may hand over to float64
        assert certified(real, fake, k, block) == want


def test_radii_within_the_float64_rounding() -> None:
    """The float32 path's radii (behind prdc) against the float64 ones knn_radii returns."""
    x = torch.from_numpy(clip_like(3000, 64, 11)).double()
    x[10:16] = x[9]  # radius 0
    x[100:130] = x[99] + 1e-9 * torch.randn(30, 64, dtype=torch.float64)  # more than kept
    fast = _knn.fast_radii_sq(x, 5, 1024)
    assert fast is not None
    ref = fid._radii_sq_exact(x, 5, 1024)
    # Both are float64 roundings of the same squared distances: ≤ 2(4d + 8)·2⁻⁵³·max‖x‖² apart.
    bound = 2 * (4 * 64 + 8) * 2.0**-53 * float((x * x).sum(1).max())
    torch.testing.assert_close(fast, ref, rtol=0, atol=bound)
    assert torch.equal(F.knn_radii(x, 5), ref.sqrt())  # knn_radii is the float64 definition
    assert bool((fast[9:16] == 0).all()) and float(fast[99:130].max()) < 1e-15


def test_against_the_prdc_package() -> None:
    rng = np.random.default_rng(12)
    real, fake = rng.normal(size=(400, 32)), rng.normal(size=(350, 32)) * 1.1 + 0.2
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints the sample sizes
        peer = prdc_pkg.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    ours = F.prdc(real, fake)
    assert ours == exact(real, fake)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(float(peer[key]), abs=1e-12), key


def test_memory_stays_blockwise() -> None:
    """No tensor the float32 path allocates is larger than a few blocks of rows."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    Largest.numel = max(Largest.numel, t.numel())
            return out

    real, fake = clip_like(1500, 16, 13), clip_like(1400, 16, 14)
    r, f = as_embeddings("real", real), as_embeddings("fake", fake)
    with Largest():
        counts = _knn.fast_prdc(r, f, 5, 100, fid._TIE_RTOL)
    assert counts is not None
    assert Largest.numel <= 2 * 100 * 1500 < 1400 * 1500 / 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_float64() -> None:
    real, fake = clip_like(3000, 64, 15), clip_like(2500, 64, 16)
    fake[:100] = real[:100]
    r, f = torch.from_numpy(real).cuda(), torch.from_numpy(fake).cuda()
    want = exact(r, f)
    assert certified(r, f) == want
    assert F.prdc(r, f) == want
    assert math.isclose(want.density, exact(real, fake).density, abs_tol=1e-12)


@pytest.mark.parametrize(("rows", "width"), [(5, 1000), (7, 1023), (3, 2049), (900, 70)])
@pytest.mark.parametrize("m", [6, 14])
def test_group_minima_select_the_smallest_entries(rows: int, width: int, m: int) -> None:
    dist = torch.randn(rows, width, generator=torch.Generator().manual_seed(rows + width))
    dist[0, :40] = 0.5  # ties
    for got, table in [(_knn._row_smallest(dist, m), dist), (_knn._col_smallest(dist.T, m), dist)]:
        values, cols = got
        assert torch.equal(table.gather(1, cols), values)
        assert torch.equal(values.sort(dim=1).values, table.topk(m, largest=False).values)


def test_the_gpu_scripts_prdc_and_nccl_checks_run_here(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/gpu_check.py's PRDC check (run on CPU at a small n) passes, and its NCCL check
    takes its skip path without two GPUs: the prepared script's CPU-runnable parts do not rot
    while no GPU is lent."""
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    spec = importlib.util.spec_from_file_location("gpu_check", folder / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    gpu_check = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(gpu_check)  # it puts benchmarks/ on sys.path for its imports
    finally:
        while str(folder) in sys.path:
            sys.path.remove(str(folder))
    assert gpu_check.prdc_check(700, torch.device("cpu"), dim=16) == 0
    if torch.cuda.device_count() < 2:
        assert gpu_check._nccl() == 0
    out = capsys.readouterr().out
    assert "[ok] PRDC, n = 700 + 700, d = 16 on cpu" in out and "values identical" in out
