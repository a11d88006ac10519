"""The real-data :class:`Reference` the guard decides against: building, calibration, file.

- ``_reference.py``: the class (building, description, persistence, concept banks);
- ``_state.py``: the reference as a plain :class:`ReferenceState` and back (its layout, checked
  on the way in);
- ``_calibrated.py``: its calibrated support (thresholds, accepted rows, batch contexts and the
  cached nulls);
- ``_build.py``: embedding real pairs into statistics and scoring the support leave-one-out;
- ``_codec.py``: the ``.sgref`` bytes of a plain :class:`ReferenceState` (versioned, no pickle).
"""

from synthguard.reference._codec import ReferenceState
from synthguard.reference._reference import Reference

__all__ = ["Reference", "ReferenceState"]
