"""synthguard: guard retraining pipelines against model collapse from synthetic data.

Example:
    >>> import synthguard as sg
    >>> enc = sg.load_encoder("bundled:digits")
    >>> enc.dim > 0
    True
"""

from synthguard import functional, relabel
from synthguard._errors import (
    CorruptFileError,
    EncoderError,
    EncoderLoadError,
    IncompatibleStatsError,
    InvalidInputError,
    SynthGuardError,
)
from synthguard._reasons import ReasonCode
from synthguard.batch import PairBatch
from synthguard.concepts import ConceptBank, ConceptDrift
from synthguard.config import GuardConfig
from synthguard.encoders import (
    BatchedEncoder,
    CaptionTruncatedWarning,
    Encoder,
    EncoderFingerprint,
    PairEmbeddings,
    load_encoder,
)
from synthguard.guard import Guard
from synthguard.monitor import CollapseAlert, CollapseMonitor
from synthguard.reference import Reference
from synthguard.report import GuardReport, MetricResult, SampleDecision
from synthguard.stats import EmbeddingStats

__version__ = "0.1.0.dev0"

__all__ = [
    "BatchedEncoder",
    "CaptionTruncatedWarning",
    "CollapseAlert",
    "CollapseMonitor",
    "ConceptBank",
    "ConceptDrift",
    "CorruptFileError",
    "EmbeddingStats",
    "Encoder",
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
]
