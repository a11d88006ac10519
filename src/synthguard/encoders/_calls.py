"""What the public encode calls check on the way in and report on the way out.

:meth:`~synthguard.BatchedEncoder.encode_images` and
:meth:`~synthguard.BatchedEncoder.encode_texts` share these: the ``on_error`` and non-empty
checks, a sample's failure raised or kept as a NaN row, and the warning for truncated
captions. They read no encoder state, so they live outside the class.
"""

from __future__ import annotations

import warnings
from typing import Any

from synthguard._errors import InvalidInputError
from synthguard.batch import as_sample_list
from synthguard.encoders._base import Failure as _Failure
from synthguard.encoders._base import OnError

__all__ = [
    "CaptionTruncatedWarning",
    "check_on_error",
    "non_empty",
    "raise_or_keep",
    "warn_truncated",
]


class CaptionTruncatedWarning(UserWarning):
    """Some captions were longer than the text tower's context and were truncated."""


def check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "nan"):
        raise InvalidInputError(f"on_error must be 'raise' or 'nan'; got {on_error!r}")


def non_empty(values: Any, name: str) -> list[Any]:
    items = as_sample_list(values, name)
    if not items:
        raise InvalidInputError(f"{name} must contain at least one sample; got an empty sequence")
    return items


def raise_or_keep(name: str, failures: dict[int, _Failure], on_error: OnError) -> None:
    if on_error == "nan" or not failures:
        return
    first = min(failures)
    code, detail = failures[first]
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    raise InvalidInputError(f"{name}[{first}]: {code.value}: {detail}{more}")


def warn_truncated(count: int, total: int, context_length: int) -> None:
    # stacklevel=3: the frame that called encode_texts, which calls this directly.
    if count:
        warnings.warn(
            f"{count} of {total} captions exceed the text context of {context_length} tokens; "
            "they were truncated keeping the end-of-text token",
            CaptionTruncatedWarning,
            stacklevel=3,
        )
