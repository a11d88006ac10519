"""``decide``: embedded rows in, a :class:`~synthguard.GuardReport` out.

The one decision path: ``Guard.check``, ``Guard.check_embeddings``, the distributed check and
each block of a Ray pool audit call it (the pool's final verdict is :func:`make_report` on
the merged statistics). Per-sample decisions are local to the rank; the batch tests see the
summary of every rank's rows.
"""

from __future__ import annotations

from synthguard._threads import torch_threads
from synthguard.guard._plan import GuardPlan
from synthguard.guard._rows import EmbeddedRows
from synthguard.guard._samples import decide_samples
from synthguard.guard._summary import LocalShard, summarise
from synthguard.guard._verdict import make_report
from synthguard.report import GuardReport, count_reasons

__all__ = ["decide"]


def decide(plan: GuardPlan, rows: EmbeddedRows, shard: LocalShard | None = None) -> GuardReport:
    """Decide per sample and for the batch (all ranks of ``shard`` together).

    Args:
        plan: the compiled guard.
        rows: this rank's embedded batch.
        shard: how the batch is split across ranks (default: it is all here).
    """
    shard = shard or LocalShard()
    with torch_threads(plan.threads):  # the guard's own budget (GuardConfig.threads)
        outcome = decide_samples(plan, rows)
        summary = summarise(shard, plan, rows, outcome)
        decisions = outcome.decisions
        report = make_report(
            plan, summary, samples=decisions, n_relabeled=outcome.n_relabeled,
            rejects_by_reason=count_reasons(decisions),
            n_truncated=sum(d.truncated for d in decisions),
        )  # fmt: skip
    # Every rank computed the verdict from the same rows; a last collective makes sure
    # numerics (another BLAS, another GPU) did not split it: the worst verdict holds for all
    # (both collectives run on every rank, in this order).
    if summary.world_size > 1:
        all_accepted = shard.all_true(report.accepted)
        all_kept = shard.all_true(report.verdict != "rejected")
        worst = "accepted" if all_accepted else "excess_rejects" if all_kept else "rejected"
        if worst != report.verdict:
            reason = f"a rank's verdict on the same rows was {worst} (numerical disagreement)"
            update = {"verdict": worst, "accepted": False}
            report = report.model_copy(update={**update, "reasons": (*report.reasons, reason)})
    return report
