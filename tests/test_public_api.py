"""Freeze the public surface: adding or removing a public name is a deliberate, reviewed change."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import synthguard as sg

TOP_LEVEL = {
    "BatchedEncoder",
    "CaptionTruncatedWarning",
    "CollapseMonitor",
    "CollapseAlert",
    "ConceptBank",
    "ConceptDrift",
    "CorruptFileError",
    "Encoder",
    "EmbeddingStats",
    "EncoderError",
    "EncoderFingerprint",
    "EncoderLoadError",
    "Guard",
    "GuardConfig",
    "GuardReport",
    "IncompatibleStatsError",
    "InvalidInputError",
    "MetricResult",
    "PairBatch",
    "PairEmbeddings",
    "ReasonCode",
    "Reference",
    "SampleDecision",
    "SynthGuardError",
    "__version__",
    "functional",
    "load_encoder",
    "relabel",
}

ENCODERS = {
    "BUNDLED_MODELS",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "BatchedEncoder",
    "CacheWarning",
    "CaptionTruncatedWarning",
    "EmbeddingCache",
    "Encoder",
    "EncoderFingerprint",
    "ModelBackend",
    "OnError",
    "PairEmbeddings",
    "bundled_model_path",
    "embed_pairs",
    "from_open_clip",
    "from_transformers",
    "load_encoder",
    "load_image",
}


FUNCTIONAL = {
    "AlignmentSummary",
    "CaptionStats",
    "CentroidShift",
    "CollapseReference",
    "LabelDrift",
    "PRDCResult",
    "PermutationTestResult",
    "alignment",
    "alignment_summary",
    "caption_stats",
    "centroid_shift",
    "clip_score",
    "cmmd",
    "collapse_metrics",
    "collapse_reference",
    "content_hash",
    "effective_rank",
    "exact_duplicates",
    "frechet_distance",
    "knn_radii",
    "label_drift",
    "mean_pairwise_cosine",
    "mmd2_unbiased",
    "mmd_permutation_test",
    "modality_gap",
    "near_duplicates",
    "prdc",
    "simple_tokenize",
    "total_variance",
    "vendi_score",
}


RELABEL = {
    "DEFAULT_LOGIT_SCALE",
    "LABEL_POLICIES",
    "CaptionChoice",
    "Captioner",
    "LabelDecision",
    "LabelPolicy",
    "Recaptioner",
    "Relabel",
    "RerankResult",
    "ZeroShotLabeler",
    "ZeroShotPrediction",
    "rerank_captions",
    "resolve_labels",
}


TORCH_INTEGRATION = {"GuardedCollate", "GuardedDataset", "samples_to_batch"}

REASON_CODES = {
    "unreadable_image",
    "image_too_large",
    "outside_input",
    "empty_caption",
    "unreadable_caption",
    "encoding_failed",
    "low_alignment",
    "label_mismatch",
    "near_duplicate",
    "off_manifold",
    "reference_copy",
    "long_caption",
}


CHECKS = {
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
}

PACKAGES = {
    "synthguard.checks": CHECKS,
    "synthguard.guard": {"BatchSummary", "EmbeddedRows", "Guard", "GuardPlan", "decide"},
    "synthguard.reference": {"Reference", "ReferenceState"},
    "synthguard.report": {"GuardReport", "MetricResult", "SampleDecision", "Verdict"},
    "synthguard.stats": {"EmbeddingStats", "Modality", "Moments"},
    "synthguard.config": {"GuardConfig"},
    "synthguard.batch": {"PairBatch", "as_sample_list"},
    "synthguard.sources": {
        "DEFAULT_MAX_IMAGE_BYTES",
        "RefusedImage",
        "SourceFile",
        "SourceKind",
        "detect_kind",
        "expand_braces",
        "iter_pairs",
        "read_pairs",
        "write_pairs",
    },
}


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_package_surfaces_are_frozen(name: str) -> None:
    module = importlib.import_module(name)
    assert set(module.__all__) == PACKAGES[name]
    for attribute in PACKAGES[name]:
        assert hasattr(module, attribute), attribute


INTEGRATIONS = {
    "torch": TORCH_INTEGRATION,
    "torchmetrics": {"CollapseMetrics"},
    "ray": {"PoolAudit", "actor_cpus", "audit", "embed"},
    "lightning": {"SynthGuardCallback", "batch_pairs"},
    "hf_datasets": {"guard_dataset"},
}


@pytest.mark.parametrize("name", sorted(INTEGRATIONS))
def test_integration_surfaces_are_frozen(name: str) -> None:
    module = importlib.import_module(f"synthguard.integrations.{name}")
    assert set(module.__all__) == INTEGRATIONS[name]
    for attribute in INTEGRATIONS[name]:
        assert hasattr(module, attribute), attribute


def test_reason_codes_are_stable_strings() -> None:
    assert {code.value for code in sg.ReasonCode} == REASON_CODES


def test_relabel_surface_is_frozen() -> None:
    assert set(sg.relabel.__all__) == RELABEL
    for name in RELABEL:
        assert hasattr(sg.relabel, name), name


def test_functional_surface_is_frozen() -> None:
    assert set(sg.functional.__all__) == FUNCTIONAL
    for name in FUNCTIONAL:
        assert callable(getattr(sg.functional, name)), name


def test_top_level_surface_is_frozen() -> None:
    assert set(sg.__all__) == TOP_LEVEL
    for name in sg.__all__:
        assert hasattr(sg, name), name


def test_encoders_surface_is_frozen() -> None:
    module = importlib.import_module("synthguard.encoders")
    assert set(module.__all__) == ENCODERS
    for name in module.__all__:
        assert hasattr(module, name), name


def test_errors_share_one_root() -> None:
    for name in TOP_LEVEL:
        obj = getattr(sg, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning):
            assert issubclass(obj, sg.SynthGuardError), name  # one except clause catches all


def test_package_is_typed() -> None:
    assert (Path(sg.__file__).parent / "py.typed").is_file()
