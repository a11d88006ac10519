"""Typed, frozen results of :meth:`synthguard.Guard.check` and their HTML rendering."""

from synthguard.report._model import GuardReport, MetricResult, SampleDecision, Verdict
from synthguard.report._model import count_reasons as count_reasons  # used by the guard
from synthguard.report._model import decision_columns as decision_columns  # integrations
from synthguard.report._model import report_id as report_id  # used by the sample checks

__all__ = ["GuardReport", "MetricResult", "SampleDecision", "Verdict"]
