"""``python -m msakit`` (what ``torchrun ... -m msakit train ...`` runs)."""

import sys

try:
    from msakit.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python loads the command line
    print("error: interrupted (Ctrl-C)", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
