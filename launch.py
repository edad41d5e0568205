#!/usr/bin/env python
"""`python launch.py COMMAND ...` from a checkout: the same as the installed `mnas COMMAND ...` (mnas/cli.py)."""

import sys

from mnas.cli import main

if __name__ == "__main__":
    sys.exit(main())
