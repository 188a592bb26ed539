"""``python -m livemod.cli``: the same as the ``livemod`` command."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
