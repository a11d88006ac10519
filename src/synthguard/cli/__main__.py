"""``python -m synthguard.cli``: the same as the ``synthguard`` console script."""

import sys

from synthguard.cli._commands import main

sys.exit(main())
