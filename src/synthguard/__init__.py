"""synthguard: guard retraining pipelines against model collapse from synthetic data."""

from synthguard._errors import (
    EncoderLoadError,
    IncompatibleStatsError,
    InvalidInputError,
    SynthGuardError,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "EncoderLoadError",
    "IncompatibleStatsError",
    "InvalidInputError",
    "SynthGuardError",
    "__version__",
]
