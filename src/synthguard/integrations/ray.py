"""Ray Data for offline pools of synthetic pairs (needs ``synthguard[ray]``).

:func:`embed` runs the frozen encoder in an actor pool (one encoder per actor, a GPU each when
the cluster has GPUs); :func:`audit` decides per sample in an actor pool, merges per-block
:class:`~synthguard.EmbeddingStats` with a Ray aggregation, and reaches the guard's batch
verdict on the merged statistics. The decisions are new columns, ready for ``write_parquet``::

    import ray, synthguard as sg
    from synthguard.integrations.ray import audit, embed

    ds = ray.data.read_parquet("s3://bucket/synthetic/")  # columns image (bytes), caption, id
    ds = embed(ds, "openclip:ViT-B-32/laion2b_s34b_b79k", batch_size=256, concurrency=8)
    result = audit(ds, sg.Reference.load("real.ref"), batch_size=4096, id_column="id")
    print(result.report.summary())
    result.decisions.filter(lambda row: row["sg_accepted"]).write_parquet("accepted/")

Each actor reserves one CPU (Ray Data's default) unless the pools would hold every CPU of the
cluster: actors are started before the read and map tasks that feed them, and with no CPU slot
left those tasks stay pending for ever (``ray.init(num_cpus=2)`` with ``concurrency=2`` did).
By default each actor then reserves an equal share of all CPUs but one, counted for two pools
(``embed``'s streamed into ``audit``'s): see :func:`actor_cpus`. The reservation is Ray's
bookkeeping; the actors' threads use the cores they use either way.

The merged statistics stay bounded: a block's are ``O(d²)`` sums plus a bottom-k sample of
``GuardConfig.max_batch_rows`` rows, whatever the pool size, and cross Ray as safetensors
bytes (no pickle of our state). The decided dataset itself is materialised in Ray's object
store (which spills to disk): drop columns you do not need before ``audit``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthguard._errors import InvalidInputError
from synthguard._validation import check_float, check_int, describe
from synthguard.batch import PairBatch
from synthguard.config import GuardConfig
from synthguard.guard._pool import (
    ERROR_COLUMN,
    IMAGE_COLUMN,
    PRECISION_COLUMN,
    TEXT_COLUMN,
    TRUNCATED_COLUMN,
    PoolSpec,
    PoolState,
    block_plan,
    block_state,
    decide_block,
    pool_report,
)
from synthguard.reference import Reference
from synthguard.report import GuardReport

__all__ = ["PoolAudit", "actor_cpus", "audit", "embed"]


def actor_cpus(cluster_cpus: float, concurrency: int) -> float:
    """CPUs each actor of a pool of ``concurrency`` reserves by default.

    One (Ray Data's default) when the cluster has room for it; otherwise an equal share of all
    CPUs but one, counted for two such pools (``embed``'s actors streamed into ``audit``'s), so
    that one CPU slot always stays free for the read and map tasks that feed the actors (Ray
    starts the actors first; without a free slot those tasks never run). Rounded down to Ray's
    resolution of 1e-4.

    Example:
        >>> actor_cpus(2, 2), actor_cpus(16, 4), actor_cpus(1, 1)
        (0.25, 1.0, 0.0)
    """
    cpus = check_float("cluster_cpus", cluster_cpus, low=0.0)
    pool = check_int("concurrency", concurrency, minimum=1)
    share = max(cpus - 1.0, 0.0) / (2 * pool)
    return min(1.0, math.floor(share * 10_000) / 10_000)


def _pool_cpus(ray: Any, num_cpus: float | None, concurrency: int) -> dict[str, float]:
    """``num_cpus`` for ``map_batches``: empty (Ray's default of 1) when the cluster has room."""
    if not ray.is_initialized():
        ray.init()  # what Ray Data would do on first execution; the cluster's CPUs are then known
    cluster = float(ray.cluster_resources().get("CPU", 0.0))
    if num_cpus is None:
        share = actor_cpus(cluster, concurrency)
        return {} if share >= 1.0 else {"num_cpus": share}
    if concurrency * num_cpus > cluster - 1.0:
        warnings.warn(
            f"concurrency={concurrency} actors of num_cpus={num_cpus} reserve "
            f"{concurrency * num_cpus:g} of the cluster's {cluster:g} CPUs, leaving no CPU slot "
            "for the tasks that feed them: unless the cluster grows, the pipeline stalls. Leave "
            "num_cpus=None for a share that fits",
            UserWarning,
            stacklevel=3,
        )
    return {"num_cpus": num_cpus}


def embed(
    ds: Any,
    encoder: str,
    *,
    batch_size: int,
    image_column: str = "image",
    caption_column: str = "caption",
    concurrency: int = 1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    encoder_options: Mapping[str, Any] | None = None,
    reference: Reference | None = None,
    **map_batches_kwargs: Any,
) -> Any:
    """Add ``image_embedding``, ``text_embedding``, ``embed_error``, ``embed_truncated``
    (caption longer than the text context) and ``embed_precision`` columns to ``ds``.

    Args:
        ds: a :class:`ray.data.Dataset` with an image column (encoded bytes, paths or HWC
            arrays) and a caption column.
        encoder: an encoder spec (``"openclip:ViT-B-32/laion2b_s34b_b79k"``,
            ``"bundled:digits"``, ...); each actor loads it once.
        batch_size: rows per encoder call (required: it sets GPU memory use).
        concurrency: actors in the pool.
        num_cpus: CPUs each actor reserves; ``None``: one, or :func:`actor_cpus` when the
            cluster has too few CPUs for that (a warning says when an explicit value leaves no
            CPU slot for the tasks feeding the actors).
        num_gpus: GPUs per actor; ``None`` takes 1 when the cluster has GPUs, else 0.
        encoder_options: engine options for :func:`~synthguard.load_encoder` in each actor
            (``precision``, ``batch_size``, ``num_workers``, ...).
        reference: the reference :func:`audit` will use: the actors embed at its precision
            (unless ``encoder_options`` sets one). :func:`audit` refuses rows embedded at
            another precision than its reference's (bf16 on GPU actors against an fp32
            reference moves scores and statistics; docs/encoders.md, "Precision").
        **map_batches_kwargs: passed to :meth:`ray.data.Dataset.map_batches`.

    A sample that cannot be embedded keeps its row: NaN embeddings and its reason code
    (``unreadable_image``, ``empty_caption``, ...) in ``embed_error``.
    """
    import ray

    if not isinstance(encoder, str):
        raise InvalidInputError(
            f"encoder must be an encoder spec string (each actor loads its own copy); "
            f"got {describe(encoder)}"
        )
    check_int("batch_size", batch_size, minimum=1)
    check_int("concurrency", concurrency, minimum=1)
    if num_cpus is not None:
        num_cpus = check_float("num_cpus", num_cpus, low=0.0)
    options = dict(encoder_options or {})
    if reference is not None:
        if not isinstance(reference, Reference):
            raise InvalidInputError(f"reference must be a Reference; got {describe(reference)}")
        if reference.fingerprint is not None:
            options.setdefault("precision", reference.fingerprint.precision)
    cpus = _pool_cpus(ray, num_cpus, concurrency)
    if num_gpus is None:
        num_gpus = 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0
    return ds.map_batches(
        _Embedder,
        fn_constructor_kwargs={
            "spec": encoder, "image_column": image_column, "caption_column": caption_column,
            "options": options,
        },
        batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=concurrency), num_gpus=num_gpus,
        **cpus, **map_batches_kwargs,
    )  # fmt: skip


@dataclass(frozen=True)
class PoolAudit:
    """What :func:`audit` found.

    Attributes:
        report: the batch verdict on the whole pool (``samples`` is empty; counts cover the
            pool).
        decisions: the dataset with decision columns ``sg_accepted`` (the row may be trained
            on: its sample passed *and* the pool was not rejected, so ``filter`` on it never keeps
            rows of a rejected pool), ``sg_sample_accepted`` (the per-sample decision alone),
            ``sg_embedded``, ``sg_reasons``, ``sg_details``, ``sg_new_label`` and
            ``sg_relabeled``.
    """

    report: GuardReport
    decisions: Any


def audit(
    ds: Any,
    reference: Reference,
    config: GuardConfig | None = None,
    *,
    batch_size: int,
    id_column: str | None = None,
    label_column: str | None = None,
    concurrency: int = 1,
    num_cpus: float | None = None,
) -> PoolAudit:
    """Decide every row of an embedded pool and reach one batch verdict on all of it.

    Args:
        ds: a :class:`ray.data.Dataset` with ``image_embedding`` and ``text_embedding``
            columns (see :func:`embed`).
        reference: the real-data reference.
        config: the guard's configuration.
        batch_size: rows per decision call (per-sample ``near_duplicate`` looks within it).
        id_column: unique sample ids (keys of the pool's subsample). Recommended: with
            ``None`` rows are keyed by content, so exact duplicate rows enter the tested
            subsample together and the duplicate-rate test over-weights them (a warning
            says so).
        label_column: integer class labels, if any.
        concurrency: actors in the decision pool.
        num_cpus: CPUs each actor reserves, as in :func:`embed`.
    """
    import ray

    if not isinstance(reference, Reference):
        raise InvalidInputError(f"reference must be a Reference; got {describe(reference)}")
    check_int("batch_size", batch_size, minimum=1)
    check_int("concurrency", concurrency, minimum=1)
    if num_cpus is not None:
        num_cpus = check_float("num_cpus", num_cpus, low=0.0)
    cpus = _pool_cpus(ray, num_cpus, concurrency)
    if id_column is None:
        warnings.warn(
            "audit without id_column keys rows by content: exact duplicate rows enter the "
            "tested subsample together, over-weighting them in duplicate_rate; pass id_column",
            UserWarning,
            stacklevel=2,
        )
    spec = PoolSpec.of(block_plan(reference, config))
    columns = {"id_column": id_column, "label_column": label_column}
    blob = ray.put(reference.to_bytes())
    decided = ds.map_batches(
        _Decider,
        fn_constructor_kwargs={"reference": blob, "config": config, **columns},
        batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=concurrency), **cpus,
    ).materialize()  # fmt: skip
    present = decided.columns() or []  # None: an empty dataset has no schema
    if not present or decided.count() == 0:
        raise InvalidInputError("ds must contain at least one row; got an empty dataset")
    needed = [IMAGE_COLUMN, TEXT_COLUMN, *(c for c in (id_column, label_column) if c),
              TRUNCATED_COLUMN if TRUNCATED_COLUMN in present else None,
              *(c for c in present if c.startswith("sg_"))]  # fmt: skip
    result = decided.select_columns([c for c in needed if c]).aggregate(
        _merge_stats(spec, **columns)
    )
    if result is None:  # Ray's answer for an empty dataset
        raise InvalidInputError("ds must contain at least one row; got an empty dataset")
    merged = result[_AGGREGATE]
    verdict = block_plan(reference, config, per_sample_only=False)
    report = pool_report(verdict, PoolState.from_bytes(merged))
    # A function, not a callable class: Ray runs it as tasks in its pooled workers instead of
    # starting an actor pool (new processes) every time the decisions are read.
    final = decided.map_batches(
        _pool_verdict, fn_kwargs={"kept": report.verdict != "rejected"},
        batch_format="numpy", batch_size=batch_size,
    )  # fmt: skip
    return PoolAudit(report=report, decisions=final)


def _pool_verdict(batch: dict[str, np.ndarray], kept: bool) -> dict[str, np.ndarray]:
    """``sg_accepted`` becomes the sample's decision and the pool's verdict together (a
    rejected pool keeps nothing; ``"excess_rejects"`` keeps its accepted samples)."""
    out = dict(batch)
    out["sg_sample_accepted"] = np.asarray(batch["sg_accepted"], dtype=bool)
    out["sg_accepted"] = out["sg_sample_accepted"] & kept
    return out


class _Embedder:
    """One encoder per Ray actor."""

    def __init__(
        self, spec: str, image_column: str, caption_column: str,
        options: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        from synthguard.encoders import load_encoder

        self.encoder = load_encoder(spec, **dict(options or {}))
        self.columns = (image_column, caption_column)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from synthguard.encoders import embed_pairs

        image_column, caption_column = self.columns
        for column in self.columns:
            if column not in batch:
                raise InvalidInputError(
                    f"the dataset has no column {column!r}; got {sorted(batch)}"
                )
        pairs = PairBatch(list(batch[image_column]), list(batch[caption_column]))
        emb = embed_pairs(self.encoder, pairs)
        out = dict(batch)
        out[IMAGE_COLUMN] = emb.image.float().numpy()
        out[TEXT_COLUMN] = emb.text.float().numpy()
        out[ERROR_COLUMN] = np.array(
            [str(emb.errors[i]) if i in emb.errors else "" for i in range(len(pairs))]
        )
        out[TRUNCATED_COLUMN] = emb.truncated.numpy().astype(bool)
        out[PRECISION_COLUMN] = np.array([self.encoder.fingerprint.precision] * len(pairs))
        return out


class _Decider:
    """One per-sample guard per Ray actor (no encoder: the rows arrive embedded)."""

    def __init__(
        self, reference: Any, config: GuardConfig | None, id_column: str | None,
        label_column: str | None,
    ) -> None:  # fmt: skip
        import ray

        blob = reference if isinstance(reference, bytes) else ray.get(reference)
        self.plan = block_plan(Reference.from_bytes(blob), config)
        self.columns = {"id_column": id_column, "label_column": label_column}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        return decide_block(self.plan, batch, **self.columns)


_AGGREGATE = "synthguard_pool_state"


def _merge_stats(spec: PoolSpec, id_column: str | None, label_column: str | None) -> Any:
    """A Ray aggregation of per-block :class:`PoolState`; the accumulator is safetensors bytes."""
    from ray.data.aggregate import AggregateFnV2
    from ray.data.block import BlockAccessor

    class MergeStats(AggregateFnV2):
        def __init__(self) -> None:
            self.spec = spec
            self.columns = {"id_column": id_column, "label_column": label_column}
            empty = PoolState.empty(spec).to_bytes()
            super().__init__(_AGGREGATE, zero_factory=lambda: empty, on=None, ignore_nulls=False)

        def aggregate_block(self, block: Any) -> bytes:
            batch: dict[str, Any] = dict(BlockAccessor.for_block(block).to_numpy())
            if not len(batch.get("sg_accepted", ())):
                return PoolState.empty(self.spec).to_bytes()
            return block_state(self.spec, batch, **self.columns).to_bytes()

        def combine(self, current: bytes, new: bytes) -> bytes:
            return PoolState.from_bytes(current).merge(PoolState.from_bytes(new)).to_bytes()

    return MergeStats()
