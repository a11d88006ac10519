"""Guard.check(sync=True) across gloo processes (NCCL: tests/_process_group.py) equals one
process on the concatenated batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

import synthguard as sg
from _digits import TEMPLATE, digits_reference
from _process_group import init_group, need_ranks
from synthguard.datasets import DIGITS_CONCEPT_BANK, load_digits

CONFIG = sg.GuardConfig(n_resamples=1099, max_batch_rows=64)
#: Report fields that describe the whole batch: equal on every rank and to one process.
BATCH_FIELDS = (
    "accepted", "reasons", "risk_score", "metrics", "rows_tested", "concepts",
    "concepts_by_class", "n_samples_all_ranks", "n_accepted_all_ranks",
)  # fmt: skip


def _batch(indices: list[int], default_ids: bool = False) -> sg.PairBatch:
    """Held-out digits 270.. (the reference has 0..269); every 7th caption belongs to another
    sample and every 5th label is wrong, so there are rejects and relabels to count."""
    digits = load_digits("test")
    pool = list(range(270, 540))
    images = [digits.images[pool[i]] for i in indices]
    captions = [digits.captions[pool[(i + 3) % 270 if i % 7 == 0 else i]] for i in indices]
    labels = [(digits.labels[pool[i]] + (i % 5 == 0)) % 10 for i in indices]
    return sg.PairBatch(images, captions, labels=labels, ids=None if default_ids else indices)


def _shards(n: int, world: int, kind: str) -> list[list[int]]:
    if kind == "sampler":  # DistributedSampler pads the last ranks with repeats of the first
        return [
            list(DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=False))
            for r in range(world)
        ]
    bounds = [0, *(round(n * f) for f in (0.55, 0.75)[: world - 1]), n]  # uneven
    return [list(range(bounds[r], bounds[r + 1])) for r in range(world)]


def _worker(rank: int, world: int, folder: str, kind: str, n: int, mode: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)  # up to 3 ranks share 2 cores
    init_group(rank, world, folder)
    ref = sg.Reference.load(f"{folder}/reference.safetensors")
    guard = sg.Guard(ref, CONFIG)
    indices = _shards(n, world, kind)[rank]
    batch = _batch(indices, default_ids=mode == "default ids")
    if mode == "local ids":  # ids given, but positions: they collide across ranks
        batch = sg.PairBatch(batch.images, batch.captions, batch.labels, ids=range(len(batch)))
    if mode == "labels on rank 0 only" and rank:
        batch = sg.PairBatch(batch.images, batch.captions, ids=batch.ids)
    if mode == "bad label on rank 1" and rank == 1:
        batch = sg.PairBatch(batch.images, batch.captions, [99] * len(batch), ids=batch.ids)
    try:
        report: Any = guard.check(batch).to_dict()  # sync by default in a process group
        local = guard.check(batch, sync=False).to_dict()
    except sg.SynthGuardError as exc:
        report, local = {"error": f"{type(exc).__name__}: {exc}"}, None
    Path(f"{folder}/rank{rank}.json").write_text(json.dumps([report, local]))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def reference_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    digits = load_digits("test")
    ref = digits_reference(digits, "bundled:digits")  # a spec: workers reload the encoder
    assert ref.encoder is not None
    ref.add_concept_bank(sg.ConceptBank(DIGITS_CONCEPT_BANK, ref.encoder, templates=TEMPLATE))
    folder = tmp_path_factory.mktemp("reference")
    # One single-process check per batch size the tests use caches the nulls in the file.
    guard = sg.Guard(ref, CONFIG)
    for n in (260, 61):
        guard.check(_batch(list(range(n))))
    return ref.save(folder / "reference.safetensors")


def _spawn(tmp_path: Path, reference: Path, world: int, kind: str, n: int,
           mode: str = "") -> list[list[Any]]:  # fmt: skip
    (tmp_path / "reference.safetensors").write_bytes(reference.read_bytes())
    mp.spawn(_worker, args=(world, str(tmp_path), kind, n, mode), nprocs=world, join=True)
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("world", "kind", "n"),
    [(3, "uneven", 260), (2, "sampler", 61), (3, "sampler", 61)],
    ids=["3 ranks uneven", "2 ranks padded", "3 ranks padded"],
)
def test_sharded_check_equals_one_process(
    world: int, kind: str, n: int, reference_file: Path, tmp_path: Path
) -> None:
    need_ranks(world)
    reports = _spawn(tmp_path, reference_file, world, kind, n)
    shards = _shards(n, world, kind)
    order = [i for shard in shards for i in shard]
    unique = list(dict.fromkeys(order))  # the rank-ordered concatenation, each sample once
    guard = sg.Guard(sg.Reference.load(reference_file), CONFIG)
    whole = guard.check(_batch(unique)).to_dict()
    assert whole["metrics"] and whole["concepts"]  # the batch tests ran, concept mix included
    assert whole["n_samples"] == n
    repeats = len(order) - n
    assert (kind == "sampler") == (repeats > 0)
    # docs/scaling.md: near_duplicate compares a sample with its own rank's earlier samples
    # only, so a near duplicate whose partner sits on an earlier rank is accepted there. Such
    # samples are the one documented way the sharded batch fields may differ from one process.
    whole_by_id = {s["id"]: s for s in whole["samples"]}
    across = {
        s["id"] for report, _ in reports for s in report["samples"]
        if s["accepted"] and whole_by_id[s["id"]]["reasons"] == ["near_duplicate"]
    }  # fmt: skip
    assert not across or kind == "uneven"  # the padded cases stay on the exact path
    for rank, (report, local) in enumerate(reports):
        if across:
            assert report["n_accepted_all_ranks"] == whole["n_accepted"] + len(across)
            assert report["n_samples_all_ranks"] == whole["n_samples_all_ranks"]
        else:
            for name in BATCH_FIELDS:
                assert report[name] == whole[name], (rank, name)
        assert report["world_size"] == world and report["n_repeats"] == repeats
        summary = sg.GuardReport.model_validate(report).summary()
        assert (
            f"all {world} ranks: {report['n_accepted_all_ranks']}/{n} samples accepted" in summary
        )
        # Per-sample decisions stay local: exactly those of this rank's shard checked alone.
        assert report["samples"] == local["samples"]
        assert report["n_samples"] == len(shards[rank])
    assert sum(r["n_accepted"] for r, _ in reports) >= whole["n_accepted"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("default ids", "InvalidInputError: ids must identify samples across ranks; got the "
                        "default ids"),
        ("local ids", "InvalidInputError: ids must identify samples across ranks: rows"),
        ("labels on rank 0 only", "InvalidInputError: labels must be given on every rank"),
    ],
)  # fmt: skip
def test_inconsistent_ranks_are_refused_on_every_rank(
    mode: str, error: str, reference_file: Path, tmp_path: Path
) -> None:
    reports = _spawn(tmp_path, reference_file, 2, "uneven", 60, mode)
    for report, _ in reports:
        assert report["error"].startswith(error), report


@pytest.mark.slow
def test_a_rank_failing_before_the_collectives_fails_every_rank(
    reference_file: Path, tmp_path: Path
) -> None:
    """Rank 1's labels are out of range: it raises its own error, and rank 0 does not hang."""
    (mine, _), (theirs, _) = _spawn(tmp_path, reference_file, 2, "uneven", 60,
                                    "bad label on rank 1")  # fmt: skip
    assert mine["error"].startswith("SynthGuardError: rank(s) [1] failed before the batch")
    assert theirs["error"].startswith("InvalidInputError: labels[0] must be")


def test_sync_without_a_process_group_is_a_clear_error(reference_file: Path) -> None:
    guard = sg.Guard(sg.Reference.load(reference_file), CONFIG)
    with pytest.raises(sg.InvalidInputError, match="sync=True needs an initialised"):
        guard.check(_batch(list(range(20))), sync=True)
    # Without a process group the default checks the batch alone.
    assert guard.check(_batch(list(range(20)))).world_size == 1


class _SyncInLoader(torch.utils.data.Dataset):
    def __init__(self, guard: sg.Guard) -> None:
        self.guard = guard

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> str:
        x = torch.nn.functional.normalize(torch.randn(20, self.guard.reference.stats.dim), dim=1)
        try:
            self.guard.check_embeddings(x, x, sync=True)
        except sg.InvalidInputError as exc:
            return str(exc)
        return "no error"


def test_sync_is_refused_in_a_dataloader_worker(reference_file: Path) -> None:
    guard = sg.Guard(sg.Reference.load(reference_file), CONFIG)
    loader = torch.utils.data.DataLoader(_SyncInLoader(guard), num_workers=1, batch_size=None)
    assert "cannot run in a DataLoader worker" in next(iter(loader))


def test_concept_group_names_must_be_unique_across_banks(reference_file: Path) -> None:
    ref = sg.Reference.load(reference_file)
    with pytest.raises(sg.InvalidInputError, match=r"group names must be unique.*\['digit'\]"):
        sg.Guard(ref, CONFIG, concept_banks=ref.concept_banks)  # the saved bank, twice
