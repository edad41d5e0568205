"""MNAS command line: platform-aware neural architecture search (MnasNet, Tan et al. CVPR 2019).

    mnas describe mnasnet-a1            # per-layer table, params, multiply-adds
    mnas search --config configs/default.yaml
    mnas results runs/default --pareto

`mnas` is the console script of the checkout's virtualenv: `.venv/bin/mnas`, or plain `mnas` after
`source .venv/bin/activate` (`.venv/bin/python launch.py` and `python -m mnas` are the same). Run `mnas COMMAND --help` for each
command. Library start-up chatter (TensorFlow's C++ logs, Ray's notices) is silenced unless --verbose is given.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import logging
import os
import sys

# name -> module in `commands/` (mnas.commands); a module is imported only when its command runs (or for --help).
COMMANDS: dict[str, str] = {
    "dashboard": "mnas.commands.dashboard",
    "describe": "mnas.commands.describe",
    "export": "mnas.commands.export",
    "latency": "mnas.commands.latency",
    "report": "mnas.commands.report",
    "results": "mnas.commands.results",
    "search": "mnas.commands.search",
    "train": "mnas.commands.train",
}


RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
VERBOSE_ENV = "MNAS_VERBOSE"  # "1": show library logs (set from --verbose; read where TensorFlow is imported)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (plus the usage) and exits with status 2."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mnas", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbose_help = "show the libraries' own logs (TensorFlow's C++ start-up lines, Ray's notices)"
    parser.add_argument("--verbose", action="store_true", help=verbose_help)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        _add_verbose(sub, verbose_help)
        sub.set_defaults(_run=module.run)
    return parser


def _add_verbose(parser: argparse.ArgumentParser, text: str) -> None:
    """--verbose after the command too (`mnas train --verbose ...`, `mnas latency build-lut --verbose ...`), on a
    command's own subcommands as well; SUPPRESS keeps a --verbose given before the command."""
    parser.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=text)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in {id(p): p for p in action._name_parser_map.values()}.values():
                _add_verbose(sub, text)


def quiet_libraries(verbose: bool) -> None:
    """Silences the libraries' start-up chatter (the default), or lets it through (--verbose).

    It must run before TensorFlow or Ray is imported; a value the user exported is kept. Only logs are hidden --
    nothing that changes what the libraries do (oneDNN stays on: TF_ENABLE_ONEDNN_OPTS would change the numerics,
    not just the log line; Ray's authentication mode is left to Ray).

    * TF_CPP_MIN_LOG_LEVEL=3: TensorFlow's C++ logs below FATAL, e.g. `E0000 ... failed call to cuInit` on a
      machine without a GPU. The lines TensorFlow prints while it loads, before its log settings apply (oneDNN,
      "Could not find cuda drivers"), are caught by redirecting its import (_QuietTensorFlowImport).
    * Ray's authentication notice: Ray 2.59+ turns token authentication on for a local cluster by itself and
      says so in a warning at every start; its logger is set to errors only.
    """
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger(RAY_AUTH_LOGGER).setLevel(logging.ERROR)


class _QuietTensorFlowImport:
    """A finder on sys.meta_path that runs TensorFlow's import, whenever and wherever it happens, inside
    trainer.tflite.quiet(): the C++ lines TensorFlow prints while it loads (oneDNN, CUDA drivers) come
    before TF_CPP_MIN_LOG_LEVEL applies and only a redirect of the file descriptors hides them (quiet() prints
    them after all if the import fails). Lazy: commands that never import TensorFlow pay nothing."""

    used = False

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or self.used:
            return None
        self.used = True  # once (then inert: removing it from sys.meta_path mid-search would skip the next finder)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None  # let the other finders look
        spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader:
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        from mnas.trainer.tflite import quiet

        with quiet():
            self.loader.exec_module(module)

    def __getattr__(self, name):  # everything else (resource readers, is_package) from the real loader
        return getattr(self.loader, name)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False) or os.environ.get(VERBOSE_ENV) == "1"
    quiet_libraries(verbose)
    if not verbose and "tensorflow" not in sys.modules \
            and not any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
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
