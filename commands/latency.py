"""`latency`: predict or measure an architecture's latency; build lookup tables; calibrate a device."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "latency of an architecture (Pixel 1 predictor, this host, a phone, a lookup table); build-lut; calibrate"
DESCRIPTION = """Latency in milliseconds, batch 1, from one of the backends of search.latency:

  latency ARCH [--backend B] [--resolution R] [--depth-multiplier D] [--json]
      (the same as 'latency predict ARCH ...'). B is one of
        pixel1           Pixel 1 predictor: the seed's 25 MnasNet-A1 rows and 4 published figures (default; instant)
        host             measured here: Keras -> TFLite -> LiteRT, 1 thread, the fastest of 5 timing passes
                         (about 10 s a new network; cached)
        lut:FILE         a lookup table from 'latency build-lut'
        calibrated:FILE  a predictor from 'latency calibrate'
        adb[:SERIAL]     measured on a phone with the TFLite benchmark_model tool over adb
  latency build-lut --output FILE [--space NAME --samples N | --arch ARCH ...] [--backend host|adb[:SERIAL]]
                    [--layer-model [all|missing]]
      measure every distinct layer of those architectures once and calibrate on a few whole networks; with
      --layer-model, also learn a per-layer model so that the table predicts layers it never measured
  latency calibrate CSV --output FILE [--arch ARCH] [--name NAME] [--channel-tile auto|N] [--prior P ...]
      fit a predictor for a new device from measured (arch, resolution, depth_multiplier, ms) rows; with
      --prior (pixel1 or a predictor file, repeatable), as a mix of devices already known (best from a
      handful of measurements)

ARCH is a registry name (mnasnet-a1, mobilenetv2, ...), a block-string file, block strings in quotes, or a
search's child, RUN_DIR:RANK or RUN_DIR:pareto:I (as `results RUN_DIR` numbers them).
Run 'latency build-lut --help' or 'latency calibrate --help' for their options. Long work reports progress on
stderr; results go to stdout."""


class _Subcommands(argparse._SubParsersAction):
    """Subcommands where an unknown first word means `predict` (so `latency ARCH` keeps working)."""

    class _Any(dict):
        def __contains__(self, item):
            return True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.choices = self._Any(self.choices)

    def __call__(self, parser, namespace, values, option_string=None):
        if values and values[0] not in dict.keys(self._name_parser_map):
            values = ["predict", *values]
        super().__call__(parser, namespace, values, option_string)


def _measure_options(parser):
    group = parser.add_argument_group("measured backends (host, adb)")
    group.add_argument("--quantize", choices=("float32", "int8"), default="float32", help="TFLite model type")
    group.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1, as the paper)")
    group.add_argument("--runs", type=int, default=None, help="timed runs (default: host 30, adb 50)")
    group.add_argument("--passes", type=int, default=None,
                       help="host: timings of each network (and layer), interleaved over those measured "
                            "together; the fastest counts (default 5)")
    group.add_argument("--cache-dir", default=None, help="measurement cache (default $MNAS_LATENCY_CACHE or "
                                                         "~/.cache/mnas/latency)")
    group.add_argument("--no-cache", action="store_true", help="measure even when cached, store nothing")
    group.add_argument("--adb", default="adb", help="adb executable (default: adb on PATH)")
    group.add_argument("--benchmark-binary", default="/data/local/tmp/benchmark_model",
                       help="benchmark_model on the phone")
    group.add_argument("--taskset", default=None, help="CPU mask to pin the phone's big cores, e.g. f0")


def add_arguments(parser):
    sub = parser.add_subparsers(dest="latency_command", metavar="{ARCH,predict,build-lut,calibrate}",
                                action=_Subcommands, required=True)
    predict = sub.add_parser("predict", help="latency of one architecture (default when ARCH comes first)",
                             formatter_class=argparse.RawDescriptionHelpFormatter, description=DESCRIPTION)
    predict.add_argument("arch", metavar="ARCH", help="registry name, block-string file, inline block strings, "
                                                      "RUN_DIR:RANK or RUN_DIR:pareto:I")
    predict.add_argument("--backend", default="pixel1", help="pixel1 (default), host, lut:FILE, calibrated:FILE, "
                                                             "adb, adb:SERIAL")
    predict.add_argument("--resolution", type=int, default=None, help="input size (default: the architecture's)")
    predict.add_argument("--depth-multiplier", type=float, default=None, help="width multiplier (default 1.0)")
    predict.add_argument("--json", action="store_true", help="print one JSON object")
    _measure_options(predict)

    build = sub.add_parser("build-lut", help="measure each distinct layer once into a lookup-table file",
                           description="Build a per-layer lookup table (ProxylessNAS/FBNet style) by measuring "
                                       "every distinct layer of the given architectures once on a backend, then "
                                       "calibrate it on a few of them measured whole: a network costs fixed + "
                                       "scale x (sum of its layers) + a per-weight term (weights streamed from "
                                       "memory), fitted from 5 networks up; with fewer, the fixed cost alone.")
    build.add_argument("--output", "-o", required=True, help="JSON file to write (an existing one is extended)")
    build.add_argument("--arch", action="append", default=[], help="an architecture to cover (repeatable)")
    build.add_argument("--space", default=None, help="a search space (preset or YAML) to sample from")
    build.add_argument("--samples", type=int, default=20, help="architectures sampled from --space (default 20)")
    build.add_argument("--seed", type=int, default=0, help="sampling seed")
    build.add_argument("--backend", default="host", help="host (default) or adb[:SERIAL]")
    build.add_argument("--resolution", type=int, default=None, help="input size (default: the architectures')")
    build.add_argument("--fixed-cost-archs", type=int, default=10,
                       help="whole networks measured to calibrate the table (default 10; 1-4 fit the fixed cost "
                            "only; 0 skips)")
    build.add_argument("--name", default=None, help="source name recorded with results (default lut-BACKEND)")
    build.add_argument("--layer-model", nargs="?", const="all", choices=("all", "missing"), default=None,
                       help="also learn a per-layer model from the table's layers (boosted trees over analytic "
                            "features), so the table predicts any architecture: 'all' (the default when the flag "
                            "is given) takes every layer from the model, 'missing' only those the table lacks. "
                            "Needs 30+ layers; learned from the layers of about 100 networks, it predicts new ones within ~3%% on "
                            "this host. To add a model to an existing table, run again over a few networks: "
                            "their layers are not measured twice")
    _measure_options(build)

    calibrate = sub.add_parser("calibrate", help="fit a device predictor from a CSV of measurements",
                               description="Fit a latency predictor for a device from a CSV with columns arch, "
                                           "resolution (or input_size), depth_multiplier, ms (or latency_ms or "
                                           "one *_ms column); arch may be left out with --arch. Prints its "
                                           "leave-one-out error. Use the result as --backend calibrated:FILE.")
    calibrate.add_argument("csv", metavar="CSV", help="measurements")
    calibrate.add_argument("--output", "-o", required=True, help="predictor JSON to write")
    calibrate.add_argument("--arch", default=None, help="the architecture of rows without an arch column")
    calibrate.add_argument("--name", default=None, help="source name (default: CSV file name + '-predicted')")
    calibrate.add_argument("--channel-tile", default="auto", choices=["auto", "1", "4", "8", "16", "32"],
                           help="output channels the device's convolution kernels compute at once (16 on an "
                                "AVX-512 host); auto (default) picks it by leave-one-out error from 8 "
                                "measurements up")
    calibrate.add_argument("--prior", action="append", default=[], metavar="PREDICTOR",
                           help="a known device's predictor: pixel1 or a file from 'latency calibrate' "
                                "(repeatable). The new device is then fitted as a non-negative mix of them, "
                                "latency = b + sum w_d x LAT_d, which needs far fewer measurements than "
                                "fitting the features afresh")


def _backend_options(args, backend: str) -> dict:
    if backend.split(":", 1)[0] not in ("host", "adb"):
        return {}
    options = {"quantize": args.quantize, "progress": True}
    if args.no_cache:
        options["cache_dir"] = None
    elif args.cache_dir:
        options["cache_dir"] = args.cache_dir
    if backend.startswith("host"):
        options.update(num_threads=args.threads, **({"runs": args.runs} if args.runs else {}),
                       **({"passes": args.passes} if args.passes is not None else {}))
    elif args.passes is not None:
        raise ValueError("--passes is for the host backend (a phone's benchmark_model times its own runs)")
    else:
        options.update(adb=args.adb, benchmark_binary=args.benchmark_binary, taskset=args.taskset,
                       num_threads=args.threads, **({"num_runs": args.runs} if args.runs else {}))
    return options


def _predict(args) -> int:
    from mnas.commands.describe import resolve
    from mnas.measure import get_latency_model

    arch = resolve(args)
    model = get_latency_model(args.backend, **_backend_options(args, args.backend))
    measured = getattr(model, "measure", None)
    result = measured(arch) if measured else None
    ms = result.ms if result else model.latency_ms(arch)
    if args.json:
        out = {"arch": args.arch, "blocks": list(arch.block_strings), "latency_ms": ms, "source": model.name,
               "backend": args.backend, "resolution": arch.resolution, "depth_multiplier": arch.depth_multiplier}
        if result:
            out["measurement"] = result.to_dict()
        uncertainty = getattr(model, "uncertainty", None)   # predictors: how far the arch is from their fitted data
        if uncertainty and not result:
            out["uncertainty"] = uncertainty([arch])[0]
        out["model"] = model.describe()
        print(json.dumps(out, indent=2))
    else:
        spread = f" (cv {result.cv:.1%} over {result.runs} runs)" if result else ""
        print(f"{args.arch} at {arch.resolution}x{arch.resolution}, depth multiplier {arch.depth_multiplier:g}: "
              f"{ms:.2f} ms{spread} [{model.name}]")
    return 0


def _build_lut(args) -> int:
    from mnas.measure.layers import adb_layer_measurer, host_layer_measurer
    from mnas.search.latency.lut import LookupTable, build_lut
    from mnas.search.registry import load_space
    from mnas.trainer.replay import resolve_arch

    archs = [resolve_arch(a).arch for a in args.arch]
    if args.space:
        space = load_space(args.space)
        archs += [space.sample(args.seed + i) for i in range(args.samples)]
    import os

    existing = LookupTable.load(args.output) if os.path.exists(args.output) else None
    if not archs:
        raise ValueError("nothing to measure: give --arch ARCH (repeatable) or --space NAME --samples N")
    kind = args.backend.split(":", 1)[0]
    options = _backend_options(args, args.backend)
    if kind == "host":
        from mnas.measure.host import HostTFLite

        model = HostTFLite(**options)
        measure_layers = host_layer_measurer(args.threads, args.quantize, progress=True,
                                             **({"passes": args.passes} if args.passes is not None else {}))

        def measure_networks(networks, between):    # in passes, the layers measured between them
            return [m.ms for m in model.measure_many(networks, args.resolution, between=between)]

        passes = model.passes
    elif kind == "adb":
        from mnas.measure.adb import AdbLatency

        model = AdbLatency(serial=args.backend.partition(":")[2] or None, **options)
        measure_layers = adb_layer_measurer(model.device, args.quantize, progress=True)
        measure_networks, passes = model.predict, 1
    else:
        raise ValueError(f"build-lut measures on host or adb[:SERIAL], not {args.backend!r}")
    settings = model.settings() if hasattr(model, "settings") else model.device.settings()
    lut = build_lut(archs, measure_layers, measure_networks, args.resolution, args.fixed_cost_archs,
                    name=args.name or f"lut-{model.name}", backend=settings, existing=existing, progress=True,
                    layer_model=args.layer_model, network_passes=passes)
    lut.save(args.output)
    learned = (f"; a layer model for {lut.model_for} layers (fit {lut.model.meta['fit_mape_percent']:.1f}% per "
               "layer)" if lut.model else "")
    print(f"{args.output}: {len(lut.layers)} layers{learned}; latency = {lut.fixed_ms:.3f} ms + {lut.scale:.3f} x "
          f"layers + {lut.weights_ms:.3f} ms per million weights [{lut.name}]")
    return 0


def _calibrate(args) -> int:
    import os

    from mnas.search.latency.calibrate import calibrate, read_measurements

    archs, values = read_measurements(args.csv, arch=args.arch)
    name = args.name or os.path.splitext(os.path.basename(args.csv))[0] + "-predicted"
    tile = None if args.channel_tile == "auto" else int(args.channel_tile)
    priors = [_prior(spec) for spec in args.prior]
    predictor = calibrate(archs, values, name, source=args.csv, tile=tile, priors=priors)
    predictor.save(args.output)
    meta = predictor.meta
    if priors:
        weights = ", ".join(f"{s.name} x{w:.3f}" for s, w in zip(predictor.sources, predictor.weights))
        print(f"{args.output}: {name} from {len(values)} measurements as {predictor.intercept:.3f} ms + {weights}; "
              f"leave-one-out MAPE {meta['loo_mape_percent']:.2f}% (fit {meta['fit_mape_percent']:.2f}%; the "
              f"features fitted afresh: {meta['features_loo_mape_percent']:.2f}%)")
    else:
        print(f"{args.output}: {name} from {len(values)} measurements, channel tile {predictor.tile}, leave-one-out "
              f"MAPE {meta['loo_mape_percent']:.2f}% (fit {meta['fit_mape_percent']:.2f}%)")
    return 0


def _prior(spec: str):
    """--prior: 'pixel1', 'calibrated:FILE' or FILE."""
    from mnas.measure import get_latency_model
    from mnas.search.latency import load_predictor

    if spec == "pixel1" or spec.startswith("calibrated:"):
        return get_latency_model(spec)
    return load_predictor(spec)


def run(args) -> int:
    from mnas.measure.adb import DeviceError

    commands = {"predict": _predict, "build-lut": _build_lut, "calibrate": _calibrate}
    try:
        return commands[args.latency_command](args)
    except DeviceError as err:
        print(f"mnas latency: device error: {err}", file=sys.stderr)
        return 1
