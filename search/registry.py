"""Named architectures and preset search spaces, and how a user names either on the command line.

Explicit dictionaries, no if/elif chains: add an entry to extend. The MnasNet definitions are the block strings
of the official release (tensorflow/tpu, models/official/mnasnet/mnasnet_models.py).
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Any, Mapping

from mnas.search.arch import Architecture, echo, parse_arch_text
from mnas.search.space import SearchSpace

# name -> (block strings, non-default architecture fields)
_DEFINITIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    # MnasNet-A1 (paper Fig. 7(a)): 3.9M params, 312M multiply-adds, 75.2% top-1, 78 ms on a Pixel 1.
    "mnasnet-a1": ((
        "r1_k3_s11_e1_i32_o16_noskip",    # 112x112
        "r2_k3_s22_e6_i16_o24",           # 56x56
        "r3_k5_s22_e3_i24_o40_se0.25",    # 28x28
        "r4_k3_s22_e6_i40_o80",           # 14x14
        "r2_k3_s11_e6_i80_o112_se0.25",   # 14x14
        "r3_k5_s22_e6_i112_o160_se0.25",  # 7x7
        "r1_k3_s11_e6_i160_o320",         # 7x7
    ), {}),
    # MnasNet-B1: the paper's search without squeeze-excite.
    "mnasnet-b1": ((
        "r1_k3_s11_e1_i32_o16_noskip",
        "r3_k3_s22_e3_i16_o24",
        "r3_k5_s22_e3_i24_o40",
        "r3_k5_s22_e6_i40_o80",
        "r2_k3_s11_e6_i80_o96",
        "r4_k5_s22_e6_i96_o192",
        "r1_k3_s11_e6_i192_o320_noskip",
    ), {}),
    # mnasnet-small: 2.0M params, 68M multiply-adds, 66.0% top-1, 23.2 ms. Stem 8, no dropout.
    "mnasnet-small": ((
        "r1_k3_s11_e1_i16_o8",
        "r1_k3_s22_e3_i8_o16",
        "r2_k3_s22_e6_i16_o16",
        "r4_k5_s22_e6_i16_o32_se0.25",
        "r3_k3_s11_e6_i32_o32_se0.25",
        "r3_k5_s22_e6_i32_o88_se0.25",
        "r1_k3_s11_e6_i88_o144",
    ), {"stem_filters": 8, "dropout": 0.0}),
    # MnasNet-D1: the backbone searched jointly with MnasFPN (Chen et al., 2019), 320-pixel detector input.
    "mnasnet-d1": ((
        "r1_k3_s11_e9_i32_o24",
        "r3_k3_s22_e9_i24_o36",
        "r5_k3_s22_e9_i36_o48",
        "r4_k5_s22_e9_i48_o96",
        "r5_k7_s11_e3_i96_o96",
        "r3_k3_s22_e9_i96_o80",
        "r1_k7_s11_e6_i80_o320_noskip",
    ), {}),
    "mnasnet-d1-320": ((
        "r3_k5_s11_e6_i32_o24",
        "r4_k7_s22_e9_i24_o36",
        "r5_k5_s22_e9_i36_o48",
        "r5_k7_s22_e6_i48_o96",
        "r5_k3_s11_e9_i96_o144",
        "r5_k5_s22_e6_i144_o160",
        "r1_k7_s11_e9_i160_o320",
    ), {"resolution": 320}),
    # MobileNetV2 (Sandler et al., 2018) in block strings: the skeleton the paper's search space is defined
    # against (t=1/c16/n1/s1, t6/c24/n2/s2, ..., t6/c320/n1/s1). 3.5M params, 300M multiply-adds.
    "mobilenetv2": ((
        "r1_k3_s11_e1_i32_o16",
        "r2_k3_s22_e6_i16_o24",
        "r3_k3_s22_e6_i24_o32",
        "r4_k3_s22_e6_i32_o64",
        "r3_k3_s11_e6_i64_o96",
        "r3_k3_s22_e6_i96_o160",
        "r1_k3_s11_e6_i160_o320",
    ), {}),
}

ARCHITECTURES: dict[str, Architecture] = {
    name: Architecture.from_strings(strings, **fields) for name, (strings, fields) in _DEFINITIONS.items()
}

SPACES: dict[str, str] = {
    "mnasnet": "mnasnet.yaml",
    "mnasnet-a1": "mnasnet-a1.yaml",
    "mnasnet-small": "mnasnet-small.yaml",
}


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {echo(name)} (known: {', '.join(ARCHITECTURES)}; "
                         "or give a file of block strings)") from None


def load_architecture(spec: str) -> Architecture:
    """A registry name, or a path to a text file with one block string a line (see `parse_arch_text`)."""
    if spec in ARCHITECTURES:
        return ARCHITECTURES[spec]
    if os.path.isfile(spec):
        return parse_arch_text(_read_text(spec, "architecture file"), source=spec)
    if os.path.exists(spec):
        raise ValueError(f"architecture path {spec!r} is not a file")
    if "_" in spec and spec.startswith("r"):
        # A single block string or a space-separated list of them, given inline.
        return parse_arch_text(spec.replace(" ", "\n"), source="<command line>")
    return get_architecture(spec)


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {what} {path!r}: {err}") from None


def _read_yaml(text: str, source: str) -> Mapping[str, Any]:
    import yaml  # pure Python; imported here so that the space module itself needs nothing beyond stdlib

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{source}:{where} not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: a search space file must hold a mapping, got {type(data).__name__}")
    return data


def load_space(spec: str | Mapping[str, Any]) -> SearchSpace:
    """A preset name (`SPACES`), a path to a YAML file, or an already-parsed dict."""
    if isinstance(spec, Mapping):
        return SearchSpace(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a search space is a preset name ({', '.join(SPACES)}), a YAML file or a mapping, "
                         f"got {echo(spec)}")
    if spec in SPACES:
        text = resources.files("mnas.search.spaces").joinpath(SPACES[spec]).read_text(encoding="utf-8")
        return SearchSpace(_read_yaml(text, spec))
    if os.path.isfile(spec):
        text = _read_text(spec, "search space file")
        try:
            return SearchSpace(_read_yaml(text, spec))
        except ValueError as err:
            message = str(err)
            raise ValueError(message if message.startswith(spec) else f"{spec}: {message}") from None
    raise ValueError(f"unknown search space {echo(spec)} (presets: {', '.join(SPACES)}; or give a YAML file)")
