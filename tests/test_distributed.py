"""EmbeddingStats.all_reduce across gloo processes (NCCL: tests/_process_group.py) equals one
process on all the data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

import synthguard as sg
from _process_group import init_group, need_ranks

DIM, NUM_LABELS = 6, 4


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(0)
    image = torch.nn.functional.normalize(
        torch.randn(n, DIM, generator=g, dtype=torch.float64), dim=1
    )
    text = torch.nn.functional.normalize(
        torch.randn(n, DIM, generator=g, dtype=torch.float64), dim=1
    )
    labels = torch.randint(0, NUM_LABELS, (n,), generator=g)
    return image, text, labels, [f"id-{i}" for i in range(n)]


def _config() -> dict[str, object]:
    return {"sample_size": 16, "seed": 3, "num_labels": NUM_LABELS,
            "count_tables": {"concept/x": (3,)}}  # fmt: skip


def _worker(rank: int, world: int, sizes: list[int], folder: str) -> None:
    import torch.distributed as dist

    init_group(rank, world, folder)
    image, text, labels, ids = _data(sum(sizes))
    start = sum(sizes[:rank])
    rows = slice(start, start + sizes[rank])
    stats = sg.EmbeddingStats(DIM, **_config())  # type: ignore[arg-type]
    if sizes[rank]:
        stats.update(image[rows], text[rows], labels=labels[rows], ids=ids[rows])
        stats.update_counts("concept/x", torch.tensor([rank, 1, sizes[rank]]))
    stats.all_reduce()
    save_file(stats.state_dict(), f"{folder}/rank{rank}.safetensors")
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("sizes", [[23, 9], [5, 0, 40]], ids=["2 ranks", "3 ranks, one empty"])
def test_sharded_all_reduce_equals_one_process(sizes: list[int], tmp_path: Path) -> None:
    need_ranks(len(sizes))
    mp.spawn(_worker, args=(len(sizes), sizes, str(tmp_path)), nprocs=len(sizes), join=True)
    image, text, labels, ids = _data(sum(sizes))
    whole = sg.EmbeddingStats(DIM, **_config())  # type: ignore[arg-type]
    whole.update(image, text, labels=labels, ids=ids)
    for rank, size in enumerate(sizes):
        if size:
            whole.update_counts("concept/x", torch.tensor([rank, 1, size]))
    expected = whole.state_dict()
    for rank in range(len(sizes)):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert set(got) == set(expected)
        for name, value in expected.items():
            if (
                "sample" in name
                or name in ("label_counts", "image_count", "pair_count")
                or "counts/" in name
            ):
                assert torch.equal(got[name], value), (rank, name)  # exact
            else:
                torch.testing.assert_close(got[name], value, rtol=1e-12, atol=1e-12)


def test_all_reduce_without_a_process_group_is_a_clear_error() -> None:
    with pytest.raises(sg.InvalidInputError, match="init_process_group"):
        sg.EmbeddingStats(DIM).all_reduce()
