"""The guard's checks and tests, each defined once, and the statistics that decide them.

- :data:`SAMPLE_CHECKS`: the calibrated per-sample checks (``GuardConfig.sample_checks``);
- :data:`BATCH_TESTS`: the batch tests (``GuardConfig.batch_tests``);
- the conformal calibration of the per-sample checks, the resampled nulls of the batch tests,
  and the inference on them (p-values, bounds, Holm, the exact flag-rate test).

docs/design.md has the recipes for adding a check or a test: one registry entry plus its tests.

Example:
    >>> from synthguard.checks import BATCH_TESTS, SAMPLE_CHECKS
    >>> SAMPLE_CHECKS["off_manifold"].score, BATCH_TESTS["coverage"].direction
    ('knn_distance', 'low')
"""

from synthguard.checks._batch import (
    BATCH_TESTS,
    CAPTION_DUPLICATE_COSINE,
    NULL_DESIGN,
    RESAMPLED_TESTS,
    BatchTest,
    BatchTestName,
    TestInputs,
    duplicate_rate,
)
from synthguard.checks._conformal import SampleCalibration
from synthguard.checks._geometry import kth_distance, max_cosine
from synthguard.checks._inference import (
    Direction,
    bound_at,
    duplicate_count_bound,
    duplicate_count_p,
    empirical_p,
    flag_rate_bound,
    flag_rate_p,
    flag_rate_test,
    holm,
)
from synthguard.checks._null import (
    BatchContext,
    batch_inputs,
    batch_null_exact,
    batch_values,
    comparison,
    held_out,
)
from synthguard.checks._resample import (
    FLOAT32_TOLERANCE,
    OPTIONAL_COLUMNS,
    Precision,
    batch_null,
)
from synthguard.checks._sample import (
    SAMPLE_CHECKS,
    RowsToScore,
    SampleCheck,
    SampleCheckName,
    Scores,
    SupportToScore,
)
from synthguard.checks._split import (
    BatchSplit,
    candidates_needed,
    split_batch,
    world_held_out,
)

__all__ = [
    "BATCH_TESTS",
    "CAPTION_DUPLICATE_COSINE",
    "FLOAT32_TOLERANCE",
    "NULL_DESIGN",
    "OPTIONAL_COLUMNS",
    "RESAMPLED_TESTS",
    "SAMPLE_CHECKS",
    "BatchContext",
    "BatchSplit",
    "BatchTest",
    "BatchTestName",
    "Direction",
    "Precision",
    "RowsToScore",
    "SampleCalibration",
    "SampleCheck",
    "SampleCheckName",
    "Scores",
    "SupportToScore",
    "TestInputs",
    "batch_inputs",
    "batch_null",
    "batch_null_exact",
    "batch_values",
    "bound_at",
    "candidates_needed",
    "comparison",
    "duplicate_count_bound",
    "duplicate_count_p",
    "duplicate_rate",
    "empirical_p",
    "flag_rate_bound",
    "flag_rate_p",
    "flag_rate_test",
    "held_out",
    "holm",
    "kth_distance",
    "max_cosine",
    "split_batch",
    "world_held_out",
]
