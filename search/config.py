"""A search's configuration: one YAML file, validated when loaded so a typo fails before Ray starts.

    name: default                 # run name, one folder name: results go to runs/<name> unless --out says otherwise
    space: mnasnet                # preset (mnasnet, mnasnet-a1, mnasnet-small) or a YAML file of your own
    strategy: mnas                # mnas (LSTM + PPO controller) | random | evolution
    samples: 40                   # children evaluated in all
    workers: 2                    # children trained at once
    cpus_per_worker: 1            # CPUs Ray reserves for each child
    gpus_per_worker: 0            # GPUs Ray reserves for each child (0.5: two children share a GPU)
    seed: 0
    deploy:                       # what the phone runs: latency and the reported params/madds are for this
      resolution: 224
      num_classes: 1000
    latency: [pixel1]             # backends (search.latency); the first is the reward's LAT(m)
    reward: {preset: soft, target_ms: 75}      # or alpha/beta; more terms under `extra_targets`
    controller: {batch_size: 5}   # search.controller.PPOConfig fields (strategy mnas)
    evolution: {population: 20, sample_size: 5}   # (strategy evolution)
    proxy: {epochs: 1}            # search.proxy.ProxyConfig fields
    limits: {max_params: 8000000} # children larger than this fail as too_large before they are built;
                                  # max_consecutive_failures (default 10, 0: never) stops a search whose
                                  # children all fail
    faults: {rate: 0.2}           # inject failures into a fraction of children (testing the search's resilience)
    scheduler: {name: asha}       # stop weak children early (Ray Tune ASHA); default none: every child trains fully
    surrogate: {model: benchmarks/results/mnas_bench_surrogate.json}   # score children with a surrogate of the
                                  # proxy (search.surrogate) instead of training them: in this process, no Ray

Each section is validated by the dataclass it configures (`Limits`, `Scheduler`, `SurrogateSettings` here,
`search.driver.Deployment`, `search.controller.PPOConfig`, `search.strategy.EvolutionConfig`,
`search.proxy.ProxyConfig`): its fields declare what they accept (`search.settings`), so an error names the file,
the field's path and what it must be. A section of a strategy that is not used is ignored, so one config can be
run with --strategy mnas, random or evolution.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from mnas.search.arch import echo
from mnas.search.settings import (BOOL, INT, NONNEGATIVE_INT, NONNEGATIVE_NUMBER, OPTIONAL_POSITIVE_INT, POSITIVE_INT,
                                  POSITIVE_NUMBER, Check, from_mapping, one_of, setting, validate)

_TOP_KEYS = {"name", "space", "strategy", "samples", "workers", "cpus_per_worker", "gpus_per_worker", "seed",
             "deploy", "latency", "reward", "controller", "evolution", "proxy", "feed_failures", "limits", "faults",
             "scheduler", "surrogate"}
MAX_NAME = 100
STRATEGY_NAMES = ("mnas", "random", "evolution")   # search.strategy.STRATEGIES, without importing it here
SCHEDULERS = ("none", "asha")


@dataclasses.dataclass(frozen=True)
class Limits:
    """A config's `limits:` section: guards on each child and on the search as a whole."""

    max_params: int | None = setting(None, OPTIONAL_POSITIVE_INT)
    """Children with more parameters fail as too_large before anything is built (null: no limit)."""
    max_consecutive_failures: int = setting(10, NONNEGATIVE_INT)
    """The search stops when this many children in a row failed: something is then broken for every child (a
    missing dataset, say), and carrying on would only record the same failure. 0: never stop."""

    def __post_init__(self):
        validate(self, "limits", section=True)


@dataclasses.dataclass(frozen=True)
class Scheduler:
    """Early stopping (`scheduler:`). ASHA (Li et al., MLSys 2020) as Ray Tune implements it: a child's proxy
    training is cut into `rungs` equal segments; after segment r < rungs it is scored on the first `rung_heldout`
    held-out images, and it goes on only if its reward so far is in the top 1/reduction_factor of the children
    that reached that rung before it. Rung checks happen at segments grace_rungs * reduction_factor^k."""

    name: str = setting("none", one_of(SCHEDULERS))
    """none: every child trains fully; asha: weak children stop early."""
    rungs: int = setting(4, POSITIVE_INT)
    """Segments of a child's proxy training (each must train at least one step)."""
    reduction_factor: int = setting(2, POSITIVE_INT)
    """Keep the top 1/reduction_factor at a rung."""
    grace_rungs: int = setting(1, POSITIVE_INT)
    """No child is stopped before this rung."""
    rung_heldout: int = setting(1000, POSITIVE_INT)
    """Held-out images scored at a rung (the last rung scores all of them)."""

    def __post_init__(self):
        validate(self, "scheduler", section=True)
        if self.name == "asha":
            if self.rungs < 2:
                raise ValueError("scheduler.rungs must be at least 2 for asha (1 leaves nothing to stop)")
            if self.reduction_factor < 2:
                raise ValueError("scheduler.reduction_factor must be at least 2")
            if self.grace_rungs >= self.rungs:
                raise ValueError(f"scheduler.grace_rungs ({self.grace_rungs}) must be below rungs ({self.rungs})")

    @property
    def segments(self) -> int:
        """Segments of each child's proxy training: 1 unless a scheduler may stop children between them."""
        return self.rungs if self.name != "none" else 1


@dataclasses.dataclass(frozen=True)
class SurrogateSettings:
    """A config's `surrogate:` section: score children with a surrogate of the proxy instead of training them."""

    model: str = setting("", Check(lambda v: isinstance(v, str) and bool(v),
                                   "the path of a surrogate file (benchmarks/mnas_bench.py fit writes one)"))
    noise: bool = setting(True, BOOL)
    """Add the proxy's own seed-to-seed noise to each prediction, as a real proxy would have."""

    def __post_init__(self):
        validate(self, "surrogate", section=True)


def check_run_name(name: Any, source: str = "config") -> str:
    """A run name becomes the folder runs/<name>: it must be one printable path component, so that no name can
    write outside runs/ ('../x'), make runs/ itself the run folder ('', '.'), or hide a control character."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{source}: name must be a non-empty string (the run folder's name), got {echo(name)}")
    if name in (".", "..") or "/" in name or "\\" in name or not name.isprintable() or len(name) > MAX_NAME:
        raise ValueError(f"{source}: name {echo(name)} is not a folder name: use up to {MAX_NAME} printable "
                         "characters without '/' or '\\', not '.' or '..'")
    return name


@dataclasses.dataclass
class SearchConfig:
    name: str = "search"
    space: Any = "mnasnet"
    strategy: str = setting("mnas", one_of(STRATEGY_NAMES), flag="--strategy",
                            help="mnas (LSTM + PPO controller), random search, or regularized evolution")
    samples: int = setting(40, POSITIVE_INT, flag="--samples", help="children to evaluate in all")
    workers: int = setting(2, POSITIVE_INT, flag="--workers", help="children trained at once")
    cpus_per_worker: float = setting(1.0, POSITIVE_NUMBER, flag="--cpus-per-worker",
                                     help="CPUs Ray reserves for each child (its TensorFlow threads: proxy.threads)")
    gpus_per_worker: float = setting(0.0, NONNEGATIVE_NUMBER, flag="--gpus-per-worker",
                                     help="GPUs Ray reserves for each child; a fraction packs several children "
                                          "on one GPU (0.5: two); 0 trains on CPUs")
    seed: int = setting(0, INT, flag="--seed", help="seed of the strategy's proposals (a child's training seed is proxy.seed, the "
                                                "same for every child)")
    deploy: dict = dataclasses.field(default_factory=lambda: {"resolution": 224, "num_classes": 1000})
    latency: list = dataclasses.field(default_factory=lambda: ["pixel1"])
    reward: dict = dataclasses.field(default_factory=lambda: {"preset": "soft", "target_ms": 75.0})
    controller: dict = dataclasses.field(default_factory=dict)
    evolution: dict = dataclasses.field(default_factory=dict)
    limits: dict = dataclasses.field(default_factory=dict)
    faults: dict = dataclasses.field(default_factory=dict)
    proxy: dict = dataclasses.field(default_factory=dict)
    scheduler: dict = dataclasses.field(default_factory=dict)
    feed_failures: bool = setting(True, BOOL)
    surrogate: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> "SearchConfig":
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: a search config must be a mapping of settings")
        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(_TOP_KEYS))})")
        config = cls(**{k: v for k, v in data.items()})
        if isinstance(config.latency, str):
            config.latency = [config.latency]
        config.validate(source)
        return config

    @classmethod
    def load(cls, path: str) -> "SearchConfig":
        import yaml

        if not os.path.isfile(path):
            raise ValueError(f"config file {path!r} not found (shipped: configs/default.yaml, configs/smoke.yaml, "
                             "configs/mnasnet-a1.yaml)")
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({getattr(err, 'problem', err)})") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read config {path!r}: {err}") from None
        return cls.from_dict(data or {}, source=path)

    def validate(self, source: str = "config") -> None:
        check_run_name(self.name, source)
        if not (isinstance(self.space, str) and self.space.strip() or isinstance(self.space, Mapping)):
            raise ValueError(f"{source}: space must be a preset name, a YAML file or a mapping, "
                             f"got {echo(self.space)}")
        validate(self, source)        # every field that says what it accepts (search.settings)
        if not isinstance(self.latency, list) or not self.latency or not all(isinstance(b, str) for b in self.latency):
            raise ValueError(f"{source}: latency must be a backend name or a list of them, got {self.latency!r}")
        for name in ("deploy", "reward", "controller", "evolution", "proxy", "limits", "faults", "scheduler",
                     "surrogate"):
            if not isinstance(getattr(self, name), Mapping):
                raise ValueError(f"{source}: {name} must be a mapping, got {getattr(self, name)!r}")
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            raise ValueError(f"{source}: gpus_per_worker above 1 must be a whole number (Ray shares a GPU between "
                             f"children, not several GPUs), got {self.gpus_per_worker!r}")
        self.deployment_in(source)
        self.limits_in(source)
        self.make_reward()
        scheduler = self.scheduler_settings(source)
        if self.surrogate:
            _section(SurrogateSettings, self.surrogate, source, "surrogate")
            if scheduler.name != "none":
                raise ValueError(f"{source}: a surrogate scores a child in one go: scheduler must be none")

    def scheduler_settings(self, source: str = "config") -> Scheduler:
        """The `scheduler` section, validated, with its defaults filled in."""
        return _section(Scheduler, self.scheduler, source, "scheduler")

    def limits_in(self, source: str = "config") -> Limits:
        """The `limits` section, validated, with its defaults filled in."""
        return _section(Limits, self.limits, source, "limits")

    @property
    def surrogate_settings(self) -> SurrogateSettings | None:
        """The `surrogate` section, or None when children are trained."""
        return _section(SurrogateSettings, self.surrogate, "config", "surrogate") if self.surrogate else None

    @property
    def rungs(self) -> int:
        """Segments of each child's proxy training: 1 unless a scheduler may stop children between them."""
        return self.scheduler_settings().segments

    def strategy_settings(self) -> dict:
        """The settings section of the chosen strategy."""
        return dict({"mnas": self.controller, "evolution": self.evolution}.get(self.strategy, {}))

    @property
    def deployment(self):
        """What the phone runs (`search.driver.Deployment`): every child is built with it applied, once."""
        return self.deployment_in("config")

    def deployment_in(self, source: str):
        from mnas.search.driver import Deployment

        return _section(Deployment, self.deploy, source, "deploy")

    @property
    def max_consecutive_failures(self) -> int:
        return self.limits_in().max_consecutive_failures

    def make_reward(self):
        """The `search.reward.Reward` of the `reward` section, on the backends of `latency`."""
        from mnas.search.reward import Reward

        return Reward.from_settings(self.reward, self.latency)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# What a resumed search may change: where it runs and how many children it evaluates in all. Everything else
# decides a child's reward or the sequence of proposals, and one run must score every child under the same rules.
RESUME_FREE = ("name", "samples", "workers", "cpus_per_worker", "gpus_per_worker")


def _section(cls, data, source: str, name: str):
    """`cls` built from the section `name` of a config; errors name the config file, the section and the field."""
    try:
        return from_mapping(cls, data, name)
    except ValueError as err:
        message = str(err)
        if not message.startswith(name):
            message = f"{name}: {message}"
        raise ValueError(f"{source}: {message}") from None


def saved_proxy(section: Mapping[str, Any] | None) -> dict:
    """A run's saved `proxy` section as it ran. Runs save the split they use (`saved_config`); a run saved before
    `split` existed trained on the file-order slices, whatever ProxyConfig's default has become since."""
    if section is not None and not isinstance(section, Mapping):
        return section                      # let the config's own check name it
    return {"split": "file-order", **(section or {})}


def saved_config(config: SearchConfig, split: str) -> dict:
    """What a run saves of its config (config.json and the store): as given, plus the proxy's split written out,
    so that a later change of ProxyConfig's default cannot change the split a resumed run trains on."""
    data = config.to_dict()
    data["proxy"] = {**data["proxy"], "split": split}
    return data


def resume_differences(saved: Mapping[str, Any], current: SearchConfig, saved_space: Mapping | None = None,
                       current_space: Mapping | None = None) -> list[str]:
    """The settings of `current` that differ from the run's `saved` config, as 'key: saved -> current' lines.

    Sections are compared with their defaults filled in (the proxy through ProxyConfig), so writing a default
    out is not a change; the strategy's settings are compared only for the strategy the run uses. A space is
    compared by its content (`saved_space` and `current_space`, the resolved specs) when both are given, so a
    different space with the same choice counts is caught even under the same file name.
    """
    from mnas.search.proxy import ProxyConfig

    saved = {**saved, "proxy": saved_proxy(saved.get("proxy"))}
    old = SearchConfig.from_dict({k: v for k, v in saved.items() if k in _TOP_KEYS}, source="the run's config")
    differences = []
    for field in dataclasses.fields(SearchConfig):
        name = field.name
        if name in RESUME_FREE or name in ("controller", "evolution"):
            continue
        before, after = getattr(old, name), getattr(current, name)
        if name == "proxy":
            before, after = ProxyConfig.from_dict(before).to_dict(), ProxyConfig.from_dict(after).to_dict()
        elif name == "scheduler":
            before, after = dataclasses.asdict(old.scheduler_settings()), dataclasses.asdict(current.scheduler_settings())
        elif name == "limits":
            before, after = dataclasses.asdict(old.limits_in()), dataclasses.asdict(current.limits_in())
        elif name == "space" and saved_space is not None and current_space is not None:
            before, after = dict(saved_space), dict(current_space)
        differences += _diff(name, _plain(before), _plain(after))
    if old.strategy == current.strategy:
        section = {"mnas": "controller", "evolution": "evolution"}.get(current.strategy, "settings")
        differences += _diff(section, _plain(old.strategy_settings()), _plain(current.strategy_settings()))
    return differences


def _diff(path: str, before, after) -> list[str]:
    """'path.key: before -> after' for each leaf that differs (mappings are walked key by key)."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [line for key in sorted(set(before) | set(after))
                for line in _diff(f"{path}.{key}", before.get(key, "(unset)"), after.get(key, "(unset)"))]
    return [] if before == after else [f"{path}: {_short(before)} -> {_short(after)}"]


def _plain(value):
    """JSON's view of a value (tuples as lists, ints and floats alike), for comparing configs."""
    import json

    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _short(value, limit: int = 80) -> str:
    text = repr(_plain(value))
    return text if len(text) <= limit else text[:limit - 3] + "..."
