"""Files: atomic writes (``_write.py``), safe reads (``_read.py``), one writer (``_lock.py``)."""

from synthguard._io._lock import WriterLock
from synthguard._io._read import (
    DEFAULT_MAX_IMAGE_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_SIDECAR_BYTES,
    FileRefusedError,
    RefusedImage,
    SourceFile,
    format_bytes,
    inside,
    open_regular,
    read_file,
)
from synthguard._io._write import (
    STALE_AFTER_S,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    clean_stale,
    staging_dir,
)

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_SIDECAR_BYTES",
    "STALE_AFTER_S",
    "FileRefusedError",
    "RefusedImage",
    "SourceFile",
    "WriterLock",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "clean_stale",
    "format_bytes",
    "inside",
    "open_regular",
    "read_file",
    "staging_dir",
]
