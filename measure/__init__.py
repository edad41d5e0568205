"""Latency on real hardware, and the registry of every latency backend the search and the CLI can name.

    from mnas.measure import get_latency_model
    model = get_latency_model("pixel1")           # or 'host', 'lut:FILE', 'calibrated:FILE', 'adb', 'adb:SERIAL'
    model.name                                    # 'pixel1-predicted': record it beside every result
    model.predict(archs, resolution=None)         # list of ms
    model.latency_ms(arch)                        # one

Backends (`BACKENDS`):
    pixel1          Pixel 1 predictor calibrated on published Pixel 1 figures (`search.latency`, pure numpy)
    calibrated:FILE a predictor fitted with `latency calibrate` (pure numpy; with --prior, a transfer predictor)
    lut:FILE        a per-layer lookup table built with `latency build-lut` (pure Python)
    host            measured on this host: Keras -> TFLite -> LiteRT, one thread, cached on disk (`measure.host`)
    adb[:SERIAL]    measured on a phone with the TFLite benchmark tool over adb, cached on disk (`measure.adb`)

This package sits above the model builder (`trainer`): it builds, converts and times models. The predictors it
names live below, in `search.latency`, which imports neither TensorFlow nor this package. Importing `measure`
imports no TensorFlow either: the measured backends load it on first use.
"""

from __future__ import annotations

from typing import Callable

from mnas.search.latency import LatencyModel, LookupTable, load_predictor, pixel1_preset


def _pixel1(arg: str | None, **options) -> LatencyModel:
    if arg or options:
        raise ValueError("the pixel1 backend takes no file and no options")
    return pixel1_preset()


def _host(arg: str | None, **options) -> LatencyModel:
    from mnas.measure.host import HostTFLite

    if arg:
        raise ValueError(f"the host backend takes no argument, got 'host:{arg}'")
    return HostTFLite(**options)


def _adb(arg: str | None, **options) -> LatencyModel:
    from mnas.measure.adb import AdbLatency

    return AdbLatency(serial=arg or None, **options)


def _needs_file(kind: str, loader: Callable[[str], LatencyModel]) -> Callable[..., LatencyModel]:
    def make(arg: str | None, **options) -> LatencyModel:
        if not arg:
            raise ValueError(f"the {kind} backend needs a file: '{kind}:FILE'")
        if options:
            raise ValueError(f"the {kind} backend takes no options, got {', '.join(options)}")
        return loader(arg)

    return make


# spec prefix -> factory(argument after ':', **options)
BACKENDS: dict[str, Callable[..., LatencyModel]] = {
    "pixel1": _pixel1,
    "host": _host,
    "lut": _needs_file("lut", LookupTable.load),
    "calibrated": _needs_file("calibrated", load_predictor),
    "adb": _adb,
}
SPEC_FORMS = ("pixel1", "host", "lut:FILE", "calibrated:FILE", "adb", "adb:SERIAL")


def get_latency_model(spec: str, **options) -> LatencyModel:
    """The latency model named by `spec` ('pixel1', 'host', 'lut:FILE', 'calibrated:FILE', 'adb[:SERIAL]').

    Keyword options go to the backend (e.g. `get_latency_model('host', quantize='int8', cache_dir=...)`).
    Raises ValueError naming an unknown backend and the known ones.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty latency backend {spec!r} (known: {', '.join(SPEC_FORMS)})")
    kind, _, arg = spec.strip().partition(":")
    factory = BACKENDS.get(kind)
    if factory is None:
        raise ValueError(f"unknown latency backend {spec!r} (known: {', '.join(SPEC_FORMS)})")
    return factory(arg or None, **options)


__all__ = ["BACKENDS", "SPEC_FORMS", "get_latency_model"]
