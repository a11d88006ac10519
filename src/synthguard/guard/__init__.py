"""The guard: embed → (re-caption) → per-sample checks → batch tests → report.

- ``_guard.py``: :class:`Guard`, the entry points (embedding, re-captioning, validation);
- ``_plan.py``: :class:`GuardPlan`, a configuration compiled against its reference;
- ``_rows.py``: :class:`EmbeddedRows`, a batch after embedding;
- ``_decide.py``: :func:`decide`, the one decision path (samples, summary, verdict);
- ``_samples.py``: per-sample decisions from the check registry;
- ``_summary.py``: :class:`BatchSummary`, what the batch tests see across ranks;
- ``_verdict.py``: the batch tests, Holm's correction and the report;
- ``_pool.py``: pool audits in blocks with mergeable statistics (Ray).
"""

from synthguard.guard._decide import decide
from synthguard.guard._guard import Guard
from synthguard.guard._plan import GuardPlan
from synthguard.guard._rows import EmbeddedRows
from synthguard.guard._summary import BatchSummary

__all__ = ["BatchSummary", "EmbeddedRows", "Guard", "GuardPlan", "decide"]
