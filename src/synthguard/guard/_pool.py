"""Pool audits in blocks: per-sample decisions per block, mergeable pool statistics, one verdict.

The engine-free core of :mod:`synthguard.integrations.ray` (and of anything else that streams a
pool in blocks): :func:`decide_block` adds decision columns to a block of embedded pairs;
:func:`block_state` turns a decided block into a :class:`PoolState` whose :meth:`~PoolState.merge`
is exact and order-free (sums, counts, bottom-k samples keyed by id or content); and
:func:`pool_report` reaches the guard's batch verdict on the merged state. The distribution and
duplicate tests run on the embeddable rows' bottom-k sample (the rows with the smallest keys: a
uniform subsample, independent of how the pool was cut into blocks); the distribution tests'
rows are chosen from it as a checked batch's are (:func:`~synthguard.checks.split_batch`).
Per-sample ``near_duplicate`` compares a sample with the earlier samples of its block only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from synthguard._errors import IncompatibleStatsError, InvalidInputError
from synthguard._reasons import ReasonCode
from synthguard._validation import unit_rows_or_nan
from synthguard.batch import PairBatch
from synthguard.checks import SAMPLE_CHECKS, candidates_needed, split_batch
from synthguard.config import GuardConfig
from synthguard.guard._decide import decide
from synthguard.guard._plan import GuardPlan
from synthguard.guard._rows import EmbeddedRows, mark_unembedded
from synthguard.guard._samples import decide_samples
from synthguard.guard._summary import BatchSummary
from synthguard.guard._verdict import make_report
from synthguard.reference import Reference
from synthguard.report import GuardReport, decision_columns
from synthguard.stats import EmbeddingStats
from synthguard.stats._hashing import hash_ids

__all__ = [
    "IMAGE_COLUMN",
    "PRECISION_COLUMN",
    "TEXT_COLUMN",
    "PoolSpec",
    "PoolState",
    "block_plan",
    "block_state",
    "decide_block",
    "pool_report",
]

IMAGE_COLUMN, TEXT_COLUMN = "image_embedding", "text_embedding"
ERROR_COLUMN, TRUNCATED_COLUMN = "embed_error", "embed_truncated"
#: The precision each row was embedded at (``integrations.ray.embed`` writes it).
PRECISION_COLUMN = "embed_precision"
_CODES = tuple(ReasonCode)
_COUNTS = ("samples", "relabeled", "truncated", "flagged")
#: Reasons that reject a sample without counting for the flag-rate test (within-batch checks).
_UNCOUNTED = frozenset(c.name for c in SAMPLE_CHECKS.values() if c.within_batch)


def block_plan(
    reference: Reference, config: GuardConfig | None, *, per_sample_only: bool = True
) -> GuardPlan:
    """The plan of rows that arrive embedded: per-sample decisions only (a block's), or, with
    ``per_sample_only=False``, the full configuration (the pool's verdict)."""
    plan = GuardPlan.compile(reference, config)
    return plan.per_sample_only() if per_sample_only else plan


def _check_precision(plan: GuardPlan, batch: dict[str, Any]) -> None:
    """Refuse rows embedded at another precision than the reference's (their scores and
    statistics are not exchangeable with the calibration's; docs/encoders.md, "Precision")."""
    fingerprint = plan.reference.fingerprint
    if fingerprint is None or PRECISION_COLUMN not in batch:
        return
    found = sorted({str(v) for v in batch[PRECISION_COLUMN]} - {fingerprint.precision})
    if found:
        raise IncompatibleStatsError(
            f"rows were embedded at precision {', '.join(found)} but the reference at "
            f"{fingerprint.precision}: pass reference= to integrations.ray.embed (it embeds at "
            f"the reference's precision), or encoder_options={{'precision': "
            f"'{fingerprint.precision}'}}"
        )


def decide_block(
    plan: GuardPlan, batch: dict[str, Any], *, id_column: str | None, label_column: str | None
) -> dict[str, Any]:
    """``batch`` plus decision columns ``sg_accepted``, ``sg_embedded``, ``sg_reasons``
    (comma-separated codes), ``sg_details``, ``sg_new_label`` (-1: none), ``sg_relabeled``
    and, per concept-bank group, ``sg_concept_<group>`` (the concept's index; the group's
    size is the uncertain bucket; -1 when not embeddable)."""
    dim = plan.reference.stats.dim
    for column in (IMAGE_COLUMN, TEXT_COLUMN):
        if column not in batch:
            raise InvalidInputError(
                f"the dataset must have a {column!r} column (run integrations.ray.embed first); "
                f"got columns {sorted(batch)}"
            )
    _check_precision(plan, batch)
    image = unit_rows_or_nan(IMAGE_COLUMN, _matrix(batch[IMAGE_COLUMN], dim), dim)
    text = unit_rows_or_nan(TEXT_COLUMN, _matrix(batch[TEXT_COLUMN], dim), dim, image.shape[0])
    n = image.shape[0]
    ids = None if id_column is None else _column(batch, id_column)
    labels = None if label_column is None else _column(batch, label_column)
    ids, labels = _ids_and_labels(n, ids, labels, id_column, label_column)
    try:
        plan.check_labels(labels)
    except InvalidInputError as exc:
        raise InvalidInputError(f"column {label_column!r}: {exc}") from exc
    given = list(batch.get(ERROR_COLUMN, [None] * n))
    truncated = torch.as_tensor(np.asarray(batch.get(TRUNCATED_COLUMN, [False] * n), bool))
    errors: dict[int, ReasonCode] = {}
    details: dict[int, str] = {}
    for i in range(n):
        if given[i]:
            errors[i] = ReasonCode(str(given[i]))
            details[i] = "could not be embedded (integrations.ray.embed)"
    mark_unembedded(image, text, errors, details)
    report = decide(
        plan, EmbeddedRows(image, text, ids, labels, errors, details, truncated=truncated)
    )
    out = dict(batch)
    columns = decision_columns(report.samples)
    out.update({name: np.array(values) for name, values in columns.items()})
    out["sg_new_label"] = np.array(columns["sg_new_label"], dtype=np.int64)
    out["sg_embedded"] = np.array([i not in errors for i in range(n)])
    for bank in plan.concept_banks:  # concept index per group (uncertain = len; -1: none)
        for group, index in bank.assign(image).items():
            out[f"sg_concept_{group}"] = index.numpy()
    return out


@dataclass(frozen=True)
class PoolSpec:
    """What a pool's statistics are shaped by (small: shipped to every aggregation task)."""

    dim: int
    sample_size: int
    seed: int
    num_labels: int | None
    concept_sizes: dict[str, int]  # group -> concepts + 1 (the uncertain bucket)

    @classmethod
    def of(cls, plan: GuardPlan) -> PoolSpec:
        names = plan.reference.label_names
        return cls(
            dim=plan.reference.stats.dim,
            # the candidates of the distribution tests' largest size (checks.split_batch)
            sample_size=max(
                plan.config.max_batch_rows,
                candidates_needed(plan.context(), plan.rows_for(plan.reference.n_support)),
            ),
            seed=plan.config.seed,
            num_labels=None if names is None else len(names),
            concept_sizes={g: len(b.groups[g]) + 1 for b in plan.concept_banks for g in b.groups},
        )


class PoolState:
    """Mergeable statistics of decided rows: accepted pairs, embeddable images, counts."""

    def __init__(self, accepted: EmbeddingStats, embedded: EmbeddingStats) -> None:
        self.accepted = accepted
        self.embedded = embedded

    @classmethod
    def empty(cls, spec: PoolSpec) -> PoolState:
        tables: dict[str, tuple[int, ...]] = {
            f"concept/{g}": (size,) for g, size in spec.concept_sizes.items()
        }
        if spec.num_labels is not None:
            tables.update({f"{k}/by_class": (spec.num_labels, *s) for k, s in tables.items()})
        config: dict[str, Any] = {"sample_size": spec.sample_size, "seed": spec.seed}
        accepted = EmbeddingStats(spec.dim, count_tables=tables, **config)
        embedded = EmbeddingStats(
            spec.dim, num_labels=spec.num_labels, count_tables={
                "pool/counts": (len(_COUNTS),), "pool/reasons": (len(_CODES),),
            }, **config,
        )  # fmt: skip
        return cls(accepted, embedded)

    def merge(self, other: PoolState) -> PoolState:
        """Exact, associative and commutative."""
        return PoolState(self.accepted.merge(other.accepted), self.embedded.merge(other.embedded))

    def to_bytes(self) -> bytes:
        """safetensors bytes (no pickle), e.g. for a Ray aggregation's accumulator."""
        tensors = {f"accepted/{k}": v for k, v in self.accepted.state_dict().items()}
        tensors.update({f"embedded/{k}": v for k, v in self.embedded.state_dict().items()})
        return save_tensors(tensors)

    @classmethod
    def from_bytes(cls, blob: bytes) -> PoolState:
        tensors = load_tensors(blob)
        parts = {
            side: {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith(side + "/")}
            for side in ("accepted", "embedded")
        }
        return cls(
            EmbeddingStats.from_state_dict(parts["accepted"]),
            EmbeddingStats.from_state_dict(parts["embedded"]),
        )


def block_state(
    spec: PoolSpec, decided: dict[str, Any], *, id_column: str | None, label_column: str | None
) -> PoolState:
    """The :class:`PoolState` of one block decided by :func:`decide_block`."""
    state = PoolState.empty(spec)
    image = unit_rows_or_nan(IMAGE_COLUMN, _matrix(decided[IMAGE_COLUMN], spec.dim), spec.dim)
    text = unit_rows_or_nan(TEXT_COLUMN, _matrix(decided[TEXT_COLUMN], spec.dim), spec.dim)
    n = image.shape[0]
    ids = None if id_column is None else _column(decided, id_column)
    acc = np.flatnonzero(np.asarray(decided["sg_accepted"], dtype=bool))
    emb = np.flatnonzero(np.asarray(decided["sg_embedded"], dtype=bool))
    state.accepted.update(image[acc], text[acc], ids=None if ids is None else [ids[i] for i in acc])
    labels = None
    if label_column is not None and spec.num_labels is not None:
        labels = torch.tensor([int(v) for v in _column(decided, label_column)])[emb]
    state.embedded.update(
        image[emb], text[emb], labels=labels, ids=None if ids is None else [ids[i] for i in emb]
    )
    carried = torch.as_tensor(np.asarray(decided["sg_new_label"], dtype=np.int64))[acc]
    for group, size in spec.concept_sizes.items():
        concept = torch.as_tensor(np.asarray(decided[f"sg_concept_{group}"], dtype=np.int64))
        concept = concept[acc]
        state.accepted.update_counts(
            f"concept/{group}", torch.bincount(concept[concept >= 0], minlength=size)
        )
        if spec.num_labels is not None:
            keep = (concept >= 0) & (carried >= 0)
            flat = torch.bincount(
                carried[keep] * size + concept[keep], minlength=spec.num_labels * size
            )
            state.accepted.update_counts(
                f"concept/{group}/by_class", flat.reshape(spec.num_labels, size)
            )
    reasons = torch.zeros(len(_CODES), dtype=torch.int64)
    flagged = 0
    for joined in decided["sg_reasons"]:
        codes = [code for code in str(joined).split(",") if code]
        for code in codes:
            reasons[_CODES.index(ReasonCode(code))] += 1
        flagged += any(code not in _UNCOUNTED for code in codes)
    relabeled = int(np.asarray(decided["sg_relabeled"], dtype=bool).sum())
    truncated = int(np.asarray(decided.get(TRUNCATED_COLUMN, [False] * n), dtype=bool).sum())
    state.embedded.update_counts("pool/counts", torch.tensor([n, relabeled, truncated, flagged]))
    state.embedded.update_counts("pool/reasons", reasons)
    return state


def pool_report(plan: GuardPlan, state: PoolState) -> GuardReport:
    """The guard's verdict on a whole pool from its merged :class:`PoolState`.

    ``samples`` is empty (the decisions are the dataset's columns); counts cover the pool.
    """
    cfg = plan.config
    n, relabeled, truncated, flagged = (int(v) for v in state.embedded.counts("pool/counts"))
    if n == 0:
        raise InvalidInputError("the pool must contain at least one row; got 0")
    n_accepted, n_valid = state.accepted.n_pairs, state.embedded.image.count
    rows, dup_rows = plan.rows_for(n_accepted), plan.duplicate_rows_for(n_valid)
    dim = state.accepted.dim
    image = text = duplicates = torch.zeros(0, dim, dtype=torch.float64)
    held = torch.zeros(0, dtype=torch.int64)
    if dup_rows >= cfg.min_batch_size:  # bottom-k prefixes: uniform subsamples of the pool
        duplicates = state.embedded.sample("image")[:dup_rows]
        if rows >= cfg.min_batch_size:
            image, text, held = _tested_rows(plan, state, rows)
    tables = state.accepted.count_tables
    labels = state.embedded.label_counts if state.embedded.num_labels else None  # 0: no column
    summary = BatchSummary(
        n=n,
        n_valid=n_valid,
        n_accepted=n_accepted,
        n_flagged=flagged,
        image=image,
        text=text,
        caption_tokens=None,  # a pool does not record caption lengths
        duplicate_image=duplicates,
        label_counts=labels if labels is not None and float(labels.sum()) else None,
        concept_counts={
            k.removeprefix("concept/"): state.accepted.counts(k)
            for k in tables
            if not k.endswith("/by_class")
        },
        concept_by_class={  # as a guard's: none when no accepted sample carries a label
            k.removeprefix("concept/").removesuffix("/by_class"): state.accepted.counts(k)
            for k in tables
            if k.endswith("/by_class") and bool(state.accepted.counts(k).any())
        },
        held_out=held,
    )
    reasons = state.embedded.counts("pool/reasons")
    return make_report(
        plan, summary, samples=(), n_relabeled=relabeled, n_truncated=truncated,
        rejects_by_reason={str(c): int(v) for c, v in zip(_CODES, reasons.tolist(), strict=True)
                           if v},
    )  # fmt: skip


def _tested_rows(
    plan: GuardPlan, state: PoolState, rows: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distribution tests' image and text rows and the support rows their comparison
    leaves out: the embeddable rows' bottom-k sample (a uniform one, in random order) are the
    candidates of :func:`~synthguard.checks.split_batch`, passed by every check but the copy
    checks as the blocks' decisions would (those checks look at each row alone)."""
    image, text = state.embedded.sample("image"), state.embedded.sample("text")
    labels = None
    if state.embedded.num_labels is not None and image.shape[0]:
        given = state.embedded.sample_labels("image")
        labels = given.tolist() if bool((given >= 0).all()) else None
    outcome = decide_samples(plan, EmbeddedRows(image, text, list(range(image.shape[0])), labels))
    split = split_batch(
        plan.context(), image, outcome.eligible, plan.sizes_from(rows), plan.config.seed,
        plan.copy_cosine,
    )  # fmt: skip
    return image[split.tested], text[split.tested], split.held_out


def _matrix(values: Any, dim: int) -> torch.Tensor:
    """A column of ``dim``-vectors (a 2-D array, or an object array of 1-D arrays)."""
    array = np.asarray(values)
    if array.dtype == object:
        array = (
            np.stack([np.asarray(v, dtype=np.float64) for v in array])
            if len(array)
            else (np.zeros((0, dim)))
        )
    return torch.from_numpy(np.array(array, copy=True))  # Arrow-backed arrays are read-only


def _column(batch: dict[str, Any], name: str) -> list[Any]:
    if name not in batch:
        raise InvalidInputError(f"column {name!r} is not in the dataset; got {sorted(batch)}")
    return [v.item() if isinstance(v, np.generic) else v for v in batch[name]]


def _ids_and_labels(
    n: int,
    ids: list[Any] | None,
    labels: list[Any] | None,
    id_column: str | None,
    label_column: str | None,
) -> tuple[list[Any], list[int] | None]:
    """Validated as a PairBatch validates them (and ids as the statistics key them), with
    the column named in the error."""
    try:
        meta = PairBatch([None] * n, [""] * n, labels=labels, ids=ids)
    except InvalidInputError as exc:
        column = label_column if str(exc).startswith("labels") else id_column
        raise InvalidInputError(f"column {column!r}: {exc}") from exc
    if ids is not None:
        try:
            hash_ids(meta.ids, n, 0)
        except InvalidInputError as exc:
            raise InvalidInputError(f"column {id_column!r}: {exc}") from exc
    return meta.ids, meta.labels
