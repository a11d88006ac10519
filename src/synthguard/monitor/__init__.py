"""CollapseMonitor: metrics across generations of a self-consuming loop, trends and warnings.

One record per generation goes to a JSONL file, rewritten atomically on every ``log`` (a crash
leaves the previous file intact and a new monitor on the same path resumes from it). A monitor
is the file's one writer: it holds an exclusive lock (``.NAME.lock`` beside it) from creation to
:meth:`~CollapseMonitor.close`, and ``log`` may be called from several threads. Every
record is compared with generation 0 (real data) and with the previous generation; each
metric gets a trend test (Mann–Kendall, i.e. Kendall's τ against the generation index, with
Theil–Sen slope) over the generations so far, and a *sustained* move in the collapse direction
raises an early warning: diversity and coverage falling, distances to the reference rising.
Each record can also go to experiment trackers (TensorBoard, MLflow, W&B, Lightning loggers,
any callable): ``CollapseMonitor(path, loggers=[...])``.

The parts: ``_metrics.py`` (what a generation is measured by), ``_trend.py`` (trends and
warnings), ``_loggers.py`` (forwarding to trackers), ``_monitor.py`` (the file and its writer).
"""

from synthguard.monitor._metrics import COLLAPSE_DIRECTIONS as COLLAPSE_DIRECTIONS
from synthguard.monitor._metrics import GENERATION_METRICS as GENERATION_METRICS
from synthguard.monitor._metrics import generation_metrics
from synthguard.monitor._monitor import CollapseMonitor
from synthguard.monitor._trend import CollapseAlert, Trend

__all__ = ["CollapseAlert", "CollapseMonitor", "Trend", "generation_metrics"]
