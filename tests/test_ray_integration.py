"""synthguard.integrations.ray on a local Ray instance equals the same steps in one process."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import synthguard as sg
from _digits import TEMPLATE, digits_reference
from synthguard.datasets import DIGITS_CONCEPT_BANK, load_digits
from synthguard.encoders import embed_pairs
from synthguard.guard._pool import PoolSpec, block_plan, block_state, decide_block, pool_report

ray = pytest.importorskip("ray")

CONFIG = sg.GuardConfig(n_resamples=1099, max_batch_rows=128)
BLOCK = 30
DECISIONS = ("sg_accepted", "sg_embedded", "sg_reasons", "sg_details", "sg_new_label",
             "sg_relabeled", "sg_concept_digit")  # fmt: skip


def _png(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_digits("test")


@pytest.fixture(scope="module")
def reference(digits: Any) -> sg.Reference:
    ref = digits_reference(digits, "bundled:digits")
    assert ref.encoder is not None
    ref.add_concept_bank(sg.ConceptBank(DIGITS_CONCEPT_BANK, ref.encoder, templates=TEMPLATE))
    return ref


@pytest.fixture(scope="module")
def rows(digits: Any) -> list[dict[str, Any]]:
    """Held-out digits 270..539 with a corrupt image, an empty caption, swapped captions
    (every 9th) and wrong labels (every 11th)."""
    out = []
    for j, i in enumerate(range(270, 540)):
        caption = digits.captions[i if j % 9 else 270 + (j + 4) % 270]
        out.append({"image": _png(digits.images[i]), "caption": caption, "id": digits.ids[i],
                    "label": (int(digits.labels[i]) + (j % 11 == 0)) % 10})  # fmt: skip
    out[5]["image"] = b"not an image"
    out[17]["caption"] = ""
    return out


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def embedded(local_ray: None, rows: list[dict[str, Any]], reference: sg.Reference) -> Any:
    from synthguard.integrations.ray import embed

    ds = ray.data.from_items(rows, override_num_blocks=len(rows) // BLOCK)
    return embed(
        ds, "bundled:digits", batch_size=BLOCK, encoder_options={"batch_size": 7},
        reference=reference,  # the actors embed at its precision
    ).materialize()  # fmt: skip


def _by_id(batch: dict[str, Any]) -> dict[str, int]:
    return {str(v): i for i, v in enumerate(batch["id"])}


@pytest.mark.slow
def test_embed_adds_the_encoders_embeddings_and_keeps_bad_rows(
    embedded: Any, rows: list[dict[str, Any]], reference: sg.Reference
) -> None:
    got = embedded.take_batch(len(rows) + 1, batch_format="numpy")
    assert len(got["id"]) == len(rows)  # nothing dropped
    where = _by_id(got)
    assert reference.encoder is not None
    want = embed_pairs(reference.encoder, sg.PairBatch(
        [r["image"] for r in rows], [r["caption"] for r in rows]
    ))  # fmt: skip
    order = [where[r["id"]] for r in rows]
    image, text = got["image_embedding"][order], got["text_embedding"][order]
    ok = [i for i in range(len(rows)) if i not in want.errors]
    np.testing.assert_allclose(image[ok], want.image[ok].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(text[ok], want.text[ok].numpy(), rtol=1e-5, atol=1e-6)
    errors = got["embed_error"][order]
    assert errors[5] == "unreadable_image" and errors[17] == "empty_caption"
    assert np.isnan(image[5]).all() and set(errors[ok]) == {""}
    assert reference.fingerprint is not None  # rows say the precision they were embedded at
    assert set(got["embed_precision"]) == {reference.fingerprint.precision}


@pytest.mark.slow
def test_audit_equals_the_same_steps_in_one_process(
    embedded: Any, reference: sg.Reference, tmp_path: Path
) -> None:
    from synthguard.integrations.ray import audit

    columns = {"id_column": "id", "label_column": "label"}
    result = audit(embedded, reference, CONFIG, batch_size=BLOCK, **columns)
    # One process: the same blocks (Ray's batches are its 30-row blocks), merged in reverse.
    blocks = [dict(b) for b in embedded.iter_batches(batch_size=None, batch_format="numpy")]
    assert all(len(b["id"]) == BLOCK for b in blocks)
    plan = block_plan(reference, CONFIG)
    spec = PoolSpec.of(plan)
    decided = [decide_block(plan, b, **columns) for b in blocks]
    states = [block_state(spec, d, **columns) for d in decided]
    merged = states[-1]
    for state in reversed(states[:-1]):
        merged = merged.merge(state)
    want = pool_report(block_plan(reference, CONFIG, per_sample_only=False), merged).to_dict()
    got = result.report.to_dict()
    assert want["metrics"]["frechet_distance"]["passed"] is not None  # the tests ran
    for name in ("accepted", "n_samples", "n_accepted", "rejects_by_reason", "n_relabeled",
                 "rows_tested", "risk_score"):  # fmt: skip
        assert got[name] == want[name], name
    assert got["verdict"] == want["verdict"]
    for name, metric in want["metrics"].items():
        assert got["metrics"][name]["value"] == pytest.approx(metric["value"], rel=1e-9)
        assert got["metrics"][name]["p_value"] == metric["p_value"], name
    assert got["concepts"] == want["concepts"]
    assert got["n_samples"] == 270 and got["rejects_by_reason"]["unreadable_image"] == 1
    # Per-sample decision columns: the same, row for row.
    ray_rows = result.decisions.take_batch(271, batch_format="numpy")
    local = {k: np.concatenate([d[k] for d in decided]) for k in ("id", *DECISIONS)}
    where = _by_id(ray_rows)
    order = [where[str(i)] for i in local["id"]]
    for name in DECISIONS:
        column = "sg_sample_accepted" if name == "sg_accepted" else name
        assert list(ray_rows[column][order]) == list(local[name]), name
    # sg_accepted: what may be trained on (the sample's decision and the pool's verdict).
    assert list(ray_rows["sg_accepted"][order]) == [
        bool(a) and got["verdict"] != "rejected" for a in local["sg_accepted"]
    ]
    # Writable to Parquet, decisions included.
    result.decisions.write_parquet(str(tmp_path / "out"))
    back = ray.data.read_parquet(str(tmp_path / "out")).take_batch(271, batch_format="numpy")
    assert len(back["id"]) == 270 and int(back["sg_sample_accepted"].sum()) == got["n_accepted"]


def test_a_mode_collapsed_pool_is_rejected_in_blocks(reference: sg.Reference, digits: Any) -> None:
    """40 distinct real 3s in blocks of 15: the pool verdict fails on diversity."""
    threes = [i for i in range(270, 540) if digits.labels[i] == 3][:40]
    assert reference.encoder is not None
    image = reference.encoder.encode_images([digits.images[i] for i in threes])
    text = reference.encoder.encode_texts([digits.captions[i] for i in threes])
    plan = block_plan(reference, CONFIG)
    spec = PoolSpec.of(plan)
    merged = None
    for start in range(0, len(threes), 15):
        block = {"image_embedding": image[start : start + 15].numpy(),
                 "text_embedding": text[start : start + 15].numpy(),
                 "id": np.array([digits.ids[i] for i in threes[start : start + 15]])}  # fmt: skip
        state = block_state(spec, decide_block(plan, block, id_column="id", label_column=None),
                            id_column="id", label_column=None)  # fmt: skip
        merged = state if merged is None else merged.merge(state)
    assert merged is not None
    report = pool_report(block_plan(reference, CONFIG, per_sample_only=False), merged)
    assert not report.accepted
    assert any(name in ("variance_ratio", "vendi_ratio", "coverage")
               for name in (m.name for m in report.failed_tests))  # fmt: skip


def test_pool_state_round_trips_through_safetensors_bytes(reference: sg.Reference) -> None:
    plan = block_plan(reference, CONFIG)
    spec = PoolSpec.of(plan)
    g = torch.Generator().manual_seed(0)
    block = {"image_embedding": torch.randn(12, spec.dim, generator=g).numpy(),
             "text_embedding": torch.randn(12, spec.dim, generator=g).numpy()}  # fmt: skip
    state = block_state(spec, decide_block(plan, block, id_column=None, label_column=None),
                        id_column=None, label_column=None)  # fmt: skip
    again = type(state).from_bytes(state.to_bytes())
    for a, b in ((state.accepted, again.accepted), (state.embedded, again.embedded)):
        for name, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[name]), name


def test_rows_embedded_at_another_precision_are_refused(reference: sg.Reference) -> None:
    """A GPU actor's bf16 rows against an fp32 reference: not exchangeable with the
    calibration (docs/encoders.md, "Precision"), so the block is refused, naming the fix."""
    plan = block_plan(reference, CONFIG)
    assert reference.fingerprint is not None
    ours = reference.fingerprint.precision
    other = "bf16" if ours != "bf16" else "fp32"
    g = torch.Generator().manual_seed(0)
    block = {"image_embedding": torch.randn(4, reference.stats.dim, generator=g).numpy(),
             "text_embedding": torch.randn(4, reference.stats.dim, generator=g).numpy(),
             "embed_precision": np.array([ours, other, ours, ours])}  # fmt: skip
    with pytest.raises(sg.IncompatibleStatsError, match=f"precision {other} but the reference"):
        decide_block(plan, block, id_column=None, label_column=None)
    block["embed_precision"] = np.array([ours] * 4)
    assert len(decide_block(plan, block, id_column=None, label_column=None)["sg_accepted"]) == 4


def test_bad_id_and_label_columns_are_named_in_the_error(reference: sg.Reference) -> None:
    plan = block_plan(reference, CONFIG)
    g = torch.Generator().manual_seed(0)
    block = {"image_embedding": torch.randn(4, reference.stats.dim, generator=g).numpy(),
             "text_embedding": torch.randn(4, reference.stats.dim, generator=g).numpy(),
             "id": np.array([0.5, 1.5, 2.5, 3.5]), "label": np.array([1.0, np.nan, 2.0, 3.0]),
             "big": np.array([1, 2, 99, 3])}  # fmt: skip
    with pytest.raises(sg.InvalidInputError, match="column 'label': labels\\[0\\] must be an int"):
        decide_block(plan, block, id_column=None, label_column="label")
    with pytest.raises(sg.InvalidInputError, match="column 'big': labels\\[2\\] must be a class"):
        decide_block(plan, block, id_column=None, label_column="big")
    with pytest.raises(sg.InvalidInputError, match="column 'id': ids\\[0\\] must be an int"):
        decide_block(plan, block, id_column="id", label_column=None)
    with pytest.raises(sg.InvalidInputError, match="column 'nope' is not in the dataset"):
        decide_block(plan, block, id_column="nope", label_column=None)


@pytest.mark.slow
def test_audit_refuses_an_empty_pool_and_warns_without_ids(
    local_ray: None, reference: sg.Reference
) -> None:
    from synthguard.integrations.ray import audit

    dim = reference.stats.dim
    empty = ray.data.from_items(
        [{"image_embedding": np.ones(dim, np.float32), "text_embedding": np.ones(dim, np.float32)}]
    ).filter(lambda row: False)
    with pytest.warns(UserWarning, match="pass id_column"), pytest.raises(
        sg.InvalidInputError, match="at least one row"
    ):  # fmt: skip
        audit(empty, reference, CONFIG, batch_size=8)


@pytest.mark.slow
def test_rows_of_a_rejected_pool_are_not_accepted(
    local_ray: None, reference: sg.Reference, digits: Any
) -> None:
    """A mode-collapsed pool is rejected; filtering on sg_accepted keeps none of its rows."""
    from synthguard.integrations.ray import audit

    threes = [i for i in range(270, 540) if digits.labels[i] == 3][:40]
    assert reference.encoder is not None
    image = reference.encoder.encode_images([digits.images[i] for i in threes]).numpy()
    text = reference.encoder.encode_texts([digits.captions[i] for i in threes]).numpy()
    ds = ray.data.from_items(
        [{"image_embedding": image[j], "text_embedding": text[j], "id": digits.ids[i]}
         for j, i in enumerate(threes)], override_num_blocks=3,
    )  # fmt: skip
    result = audit(ds, reference, CONFIG, batch_size=15, id_column="id")
    assert result.report.verdict == "rejected"
    rows = result.decisions.take_all()
    assert len(rows) == len(threes) and not any(row["sg_accepted"] for row in rows)
    assert sum(bool(row["sg_sample_accepted"]) for row in rows) == result.report.n_accepted > 0
    assert result.decisions.filter(lambda row: row["sg_accepted"]).count() == 0


@pytest.mark.parametrize("cpus", [1, 2, 3, 4, 9, 16, 64])
@pytest.mark.parametrize("concurrency", [1, 2, 3, 7, 8])
def test_actor_cpus_leave_one_cpu_slot_for_two_pools(cpus: int, concurrency: int) -> None:
    """The default share is the largest on Ray's 1e-4 grid, at most 1, with which two pools of
    ``concurrency`` actors leave a whole CPU for the tasks feeding them (brute force)."""
    from synthguard.integrations.ray import actor_cpus

    grid = [k / 10_000 for k in range(10_001)]
    want = max(s for s in grid if 2 * concurrency * s <= cpus - 1 + 1e-12)
    assert actor_cpus(cpus, concurrency) == want
    assert cpus - 2 * concurrency * actor_cpus(cpus, concurrency) >= 1 - 1e-9 or cpus < 1


def test_an_explicit_num_cpus_that_fills_the_cluster_is_named(local_ray: None) -> None:
    from synthguard.integrations.ray import embed

    ds = ray.data.from_items([{"image": b"", "caption": ""}])
    with pytest.warns(UserWarning, match=r"concurrency=2 actors of num_cpus=1.0 reserve 2 of"):
        embed(ds, "bundled:digits", batch_size=4, concurrency=2, num_cpus=1)  # lazy: not run
    with pytest.raises(sg.InvalidInputError, match=r"num_cpus must be >= 0\.0, got -1\.0"):
        embed(ds, "bundled:digits", batch_size=4, num_cpus=-1)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_ray_example_streams_two_embedding_actors_on_two_cpus(
    local_ray: None, tmp_path: Path, capsys: Any
) -> None:
    """examples/ray_audit.py on the 2-CPU instance: 2 embedding actors streamed into audit.
    Before the CPU shares (issue 17 item 7) the read tasks waited for ever behind the actors;
    the timeout turns such a stall into a failure."""
    import pyarrow.parquet as pq

    from test_examples import _load

    assert _load("ray_audit").main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows, kept = (int(v) for v in out.split("pool: ")[1].split(" may")[0].split(" rows, "))
    assert rows == 160 and 0 < kept < rows
    accepted = pq.read_table(tmp_path / "accepted").to_pydict()
    assert len(accepted["id"]) == kept and all(accepted["sg_accepted"])
    # The wrong captions (every fifth row) are what the guard rejects, for low alignment.
    wrong = {i for j, i in enumerate(range(300, 460)) if j % 5 == 0}
    assert len(wrong & set(accepted["id"])) <= 2
    assert int(out.split("rejected for low_alignment: ")[1].split()[0]) >= 28
