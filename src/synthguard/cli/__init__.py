"""The ``synthguard`` command line (console script ``synthguard = "synthguard.cli:main"``)."""

from synthguard.cli._commands import main

__all__ = ["main"]
