"""synthguard.integrations.torchmetrics.CollapseMetrics against the functional metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

import synthguard as sg
from synthguard.functional import cmmd, prdc
from synthguard.integrations.torchmetrics import CollapseMetrics
from synthguard.monitor import generation_metrics

DIM = 8


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1)


def _data(n: int = 150) -> tuple[sg.Reference, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    real = _unit(torch.randn(300, DIM, generator=g, dtype=torch.float64))
    ref = sg.Reference.from_embeddings(real, _unit(real + 0.3 * torch.randn_like(real)))
    image = _unit(torch.randn(n, DIM, generator=g, dtype=torch.float64) + 0.4)
    text = _unit(image + 0.6 * torch.randn(n, DIM, generator=g, dtype=torch.float64))
    return ref, image, text


def _close(got: dict[str, torch.Tensor], want: dict[str, float]) -> None:
    for name, value in want.items():
        assert float(got[name]) == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_chunked_updates_equal_the_functional_metrics_of_all_rows() -> None:
    ref, image, text = _data()
    metric = CollapseMetrics(ref, sample_size=1024)  # the sample holds every row
    for start in range(0, 150, 40):
        metric.update(image[start : start + 40], text[start : start + 40])
    got = metric.compute()
    _close(got, generation_metrics(ref, image, text))
    assert float(got["pairs"]) == 150 and float(got["skipped"]) == 0


def test_bad_rows_are_left_out_and_counted() -> None:
    ref, image, text = _data()
    bad_image, bad_text = image.clone(), text.clone()
    bad_image[3] = float("nan")
    bad_text[7] = 0.0
    bad_image[9, 0] = float("inf")
    metric = CollapseMetrics(ref)
    metric.update(bad_image, bad_text, ids=range(150))
    got = metric.compute()
    keep = [i for i in range(150) if i not in (3, 7, 9)]
    _close(got, generation_metrics(ref, image[keep], text[keep]))
    assert float(got["skipped"]) == 3 and float(got["pairs"]) == 147


def test_the_bottom_k_sample_is_the_one_pass_sample_whatever_the_chunks() -> None:
    ref, image, text = _data()
    ids = [f"s{i}" for i in range(150)]
    one_pass = sg.EmbeddingStats.from_embeddings(image, text, ids=ids, sample_size=40, seed=5)
    metric = CollapseMetrics(ref, sample_size=40, seed=5)
    for start in (100, 0, 50):  # out of order
        metric.update(image[start : start + 50], text[start : start + 50], ids[start : start + 50])
    got = metric.compute()
    rows = one_pass.sample("image")
    assert float(got["coverage"]) == pytest.approx(prdc(ref.support_image, rows, k=ref.k).coverage)
    assert float(got["cmmd"]) == pytest.approx(cmmd(rows, ref.support_image[:1000]), rel=1e-9)
    # Moment metrics stay exact over all 150 rows, not the 40 sampled.
    moments = ("variance_ratio", "vendi_ratio", "frechet_distance", "alignment_mean")
    _close(got, {k: v for k, v in generation_metrics(ref, image, text).items() if k in moments})


def test_merge_state_forward_and_reset_follow_torchmetrics() -> None:
    ref, image, text = _data()
    a, b = CollapseMetrics(ref), CollapseMetrics(ref)
    a.update(image[:90], text[:90], ids=range(90))
    b.update(image[90:], text[90:], ids=range(90, 150))
    a.merge_state(b)
    whole = CollapseMetrics(ref)
    whole.update(image, text, ids=range(150))
    for name, value in whole.compute().items():
        assert float(a.compute()[name]) == pytest.approx(float(value), rel=1e-12), name
    stepped = CollapseMetrics(ref)
    batch_values = stepped(image[:60], text[:60], ids=range(60))  # forward: this batch alone
    _close(batch_values, generation_metrics(ref, image[:60], text[:60]))
    stepped(image[60:], text[60:], ids=range(60, 150))
    _close(stepped.compute(), generation_metrics(ref, image, text))
    stepped.reset()
    assert float(stepped.sums.abs().sum()) == 0 and int(stepped.sample[..., -1].sum()) == 0


def test_arguments_are_validated() -> None:
    ref, image, text = _data()
    with pytest.raises(sg.InvalidInputError, match="reference must be a Reference"):
        CollapseMetrics("ref")  # type: ignore[arg-type]
    with pytest.raises(sg.InvalidInputError, match="sample_size"):
        CollapseMetrics(ref, sample_size=2)
    metric = CollapseMetrics(ref)
    with pytest.raises(sg.InvalidInputError, match="ids must have one entry per row"):
        metric.update(image, text, ids=range(3))
    with pytest.raises(sg.InvalidInputError, match="must have shape"):
        metric.update(image[:, :3], text[:, :3])
    with pytest.warns(UserWarning, match="more than k"):
        empty = metric.compute()
    assert all(torch.isnan(empty[k]) for k in ("coverage", "variance_ratio", "cmmd"))
    assert float(empty["pairs"]) == 0


def test_a_tiny_forward_batch_gives_nan_and_keeps_the_state() -> None:
    ref, image, text = _data()
    metric = CollapseMetrics(ref)
    metric.update(image[:50], text[:50], ids=range(50))
    with pytest.warns(UserWarning, match="more than k"):
        step = metric(image[50:53], text[50:53], ids=range(50, 53))  # 3 pairs <= k
    assert torch.isnan(step["coverage"]) and float(step["pairs"]) == 3
    metric.update(image[53:], text[53:], ids=range(53, 150))
    _close(metric.compute(), generation_metrics(ref, image, text))


def test_module_dtype_casts_keep_the_float64_state() -> None:
    ref, image, text = _data()
    holder = torch.nn.Module()
    holder.metric = CollapseMetrics(ref)
    holder.to(torch.bfloat16)  # what Lightning's "bf16-true" precision does
    metric = holder.metric
    assert metric.sums.dtype == torch.float64 and metric.sample.dtype == torch.int64
    metric.update(image, text, ids=range(150))
    _close(metric.compute(), generation_metrics(ref, image, text))
    metric.reset()
    assert metric.sums.dtype == torch.float64


def _worker(rank: int, world: int, folder: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world
    )
    ref, image, text = _data()
    bounds = [0, 97, 150]  # uneven shards
    rows = slice(bounds[rank], bounds[rank + 1])
    metric = CollapseMetrics(ref, sample_size=50)
    metric.update(image[rows], text[rows], ids=range(bounds[rank], bounds[rank + 1]))
    save_file(metric.compute(), f"{folder}/rank{rank}.safetensors")  # syncs across ranks
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_compute_equals_one_process_on_all_rows(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ref, image, text = _data()
    whole = CollapseMetrics(ref, sample_size=50)
    whole.update(image, text, ids=range(150))
    want = whole.compute()
    for rank in range(2):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        for name, value in want.items():
            assert float(got[name]) == pytest.approx(float(value), rel=1e-12), (rank, name)
