"""`python -m mnas COMMAND ...`: the command line (mnas/cli.py)."""

import sys

from mnas.cli import main

sys.exit(main())
