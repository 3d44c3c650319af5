"""``python -m msakit`` (what ``torchrun ... -m msakit train ...`` runs)."""

import sys

from msakit.cli import main

sys.exit(main())
