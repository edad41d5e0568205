#!/usr/bin/env python
"""MNAS command line: platform-aware neural architecture search (MnasNet, Tan et al. CVPR 2019).

    python launch.py describe mnasnet-a1            # per-layer table, params, multiply-adds
    python launch.py search --config configs/default.yaml
    python launch.py results runs/default --pareto

Installed, the same commands run as `mnas ...`. Run `python launch.py COMMAND --help` for each command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> module in `commands/`; a module is imported only when its command runs (or for --help).
COMMANDS: dict[str, str] = {
    "dashboard": "commands.dashboard",
    "describe": "commands.describe",
    "export": "commands.export",
    "latency": "commands.latency",
    "report": "commands.report",
    "results": "commands.results",
    "search": "commands.search",
    "train": "commands.train",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (plus the usage) and exits with status 2."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mnas", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"mnas {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mnas {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mnas results ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
