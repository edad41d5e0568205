"""The subcommands of `launch.py` (the `mnas` console script), one module each.

A command module defines `HELP` (one line), `DESCRIPTION` (the --help text), `add_arguments(parser)` and
`run(args) -> int`. Bad input raises ValueError with one clear sentence; `launch.main` prints it as one line and
exits with status 2. Modules import heavy libraries (TensorFlow, Ray) inside `run`, so `--help` stays instant.
"""
