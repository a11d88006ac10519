"""The real-data :class:`Reference` the guard decides against: building, calibration, file.

- ``_reference.py``: the class (statistics, support, calibration, caches, persistence);
- ``_build.py``: embedding real pairs into statistics and scoring the support leave-one-out;
- ``_codec.py``: the ``.sgref`` bytes of a plain :class:`ReferenceState` (versioned, no pickle).
"""

from synthguard.reference._codec import ReferenceState
from synthguard.reference._reference import Reference

__all__ = ["Reference", "ReferenceState"]
