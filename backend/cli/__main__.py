"""``python -m backend.cli``: the ``vigil`` command (used where the console script may not be on PATH)."""
import sys

from backend.cli import main

sys.exit(main())
