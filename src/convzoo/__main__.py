"""``python -m convzoo`` (what ``torchrun -m convzoo`` runs)."""

import sys

from .cli import main

sys.exit(main())
