"""Early stopping (ASHA): a child's proxy training in segments, the rung-by-rung trial, pruned children in the
driver, the `scheduler:` config section, and a search through Ray where ASHA really stops children.

The unit tests train on small random IDX files (labels are noise: only the contract is checked, not learning);
the end-to-end search needs Debian's dataset-fashion-mnist.
"""

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import pytest

from mnas.results.store import ResultStore
from conftest import trial_settings
from mnas.search.config import Scheduler, SearchConfig
from mnas.search.driver import STATE_FILE, SearchRun
from mnas.search.registry import load_space
from mnas.search.arch import Architecture
from mnas.search.strategy import RandomStrategy
from mnas.search.proxy import ProxyConfig
from mnas.workers.proxy import ProxyTraining, train_child
from mnas.workers.trial import ChildEvaluation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_DATA = os.path.isdir("/usr/share/datasets/fashion-mnist")
TINY_ARCH = Architecture.from_strings(["r1_k3_s11_e1_i32_o16_noskip", "r1_k3_s22_e3_i16_o24_se0.25"],
                                      stem_filters=16, head_filters=64)
# What the result of a run must reproduce exactly; timings and CPU time are the only fields allowed to differ.
TIMING_FIELDS = {"build_seconds", "train_seconds", "eval_seconds", "images_per_second", "cpu_seconds"}


@pytest.fixture(autouse=True)
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))


def tiny_proxy(data_dir, **changes) -> dict:
    return {"data_dir": data_dir, "train_subset": 512, "heldout": 256, "epochs": 1, "batch_size": 32, "width": 0.5,
            **changes}


def exact(result) -> dict:
    return {k: v for k, v in dataclasses.asdict(result).items() if k not in TIMING_FIELDS}


# ---- ProxyTraining in segments


def test_training_in_segments_gives_the_same_result_as_one_go(tiny_data):
    config = ProxyConfig(**tiny_proxy(tiny_data))
    whole = train_child(TINY_ARCH, config)
    with ProxyTraining(TINY_ARCH, config) as training:
        total = training.total_steps
        assert total == 512 // 32 == config.total_steps
        training.train_to(total // 4)
        assert training.steps_done == total // 4
        rung = training.score(limit=100)                 # a rung in between must not disturb the training
        assert 0 <= rung[0] <= 1 and math.isfinite(rung[1])
        held = training.held_data
        training.held_data = (held[0][:100], held[1][:100])
        assert training.score() == rung                  # the rung scores exactly the first 100 images ...
        training.held_data = held
        assert training.score()[1] != rung[1]            # ... not the whole slice
        training.train_to(total // 2)
        training.score()
        training.train_to(total * 10)                    # capped at total_steps
        assert training.steps_done == total
        segmented = training.result()
    assert exact(segmented) == exact(whole)
    assert segmented.steps == total and segmented.epochs == pytest.approx(1.0)
    assert segmented.train_seconds > 0 and segmented.eval_seconds > 0


# ---- ChildEvaluation, rung by rung


def child(arch=TINY_ARCH, sample=0):
    """A child's config as the driver sends it: the deployment architecture (at 224 px)."""
    return {"arch": arch.replace(resolution=224).to_dict(), "sample": sample}


REWARD = {"preset": "soft", "target_ms": 75, "failed_reward": -0.5}   # a failed reward no real child can score


def test_child_evaluation_reports_pruned_rungs_then_ok(tiny_data):
    proxy = tiny_proxy(tiny_data)
    settings = trial_settings(proxy, REWARD, rungs=3, rung_heldout=100)
    evaluation = ChildEvaluation(child(), settings)
    reward = settings.reward
    reports = [evaluation.step() for _ in range(3)]
    with pytest.raises(RuntimeError, match="already evaluated"):
        evaluation.step()

    # The same child driven by hand: rung r trains to round(16 * r / 3) steps and scores the first 100 images.
    with ProxyTraining(TINY_ARCH.replace(resolution=224), ProxyConfig(**proxy)) as training:
        expected = []
        for steps in (5, 11):
            training.train_to(steps)
            expected.append(training.score(100))
    for rung, (report, (accuracy, loss)) in enumerate(zip(reports[:2], expected), 1):
        assert report["status"] == "pruned" and report["done"] is False and report["failure_code"] is None
        assert report["extra"]["rung"] == rung and report["extra"]["rungs"] == 3
        assert report["extra"]["steps"] == (5, 11)[rung - 1] and report["extra"]["rung_heldout"] == 100
        assert report["accuracy"] == accuracy and report["extra"]["rung_heldout_loss"] == loss
        assert report["latencies"]["pixel1"] > 0 and report["latency_source"] == "pixel1"
        assert report["score"] == reward(accuracy, report["latencies"])

    last = reports[2]
    assert last["status"] == "ok" and last["done"] is True
    assert "rung" not in last["extra"] and last["extra"]["steps"] == 16
    whole = train_child(TINY_ARCH.replace(resolution=224), ProxyConfig(**proxy))
    assert last["accuracy"] == whole.accuracy                       # the full held-out slice, not the rung's 100
    assert last["extra"]["final_loss"] == whole.final_loss
    assert last["score"] == reward(whole.accuracy, last["latencies"])


def test_a_child_that_fails_at_rung_one_ends_failed(tiny_data):
    evaluation = ChildEvaluation(child(), trial_settings(tiny_proxy(tiny_data), REWARD, rungs=3,
                                                         limits={"max_params": 1000}))
    report = evaluation.step()
    assert report["status"] == "failed" and report["done"] is True
    assert report["failure_code"] == "too_large" and "accuracy" not in report
    assert report["score"] == -0.5
    with pytest.raises(RuntimeError):
        evaluation.step()


def test_a_child_that_diverges_ends_failed_at_its_rung(tiny_data):
    evaluation = ChildEvaluation(child(), trial_settings(tiny_proxy(tiny_data), REWARD, rungs=3,
                                                         faults={"rate": 1.0, "kinds": ["nan_loss"]}))
    reports = []
    while not evaluation.done:
        reports.append(evaluation.step())
    assert len(reports) <= 3
    assert [r["status"] for r in reports[:-1]] == ["pruned"] * (len(reports) - 1)
    last = reports[-1]
    assert last["status"] == "failed" and last["failure_code"] == "nan_loss" and last["done"] is True
    assert "accuracy" not in last and last["score"] == -0.5


def test_one_rung_is_the_whole_child_in_one_step(tiny_data):
    evaluation = ChildEvaluation(child(), trial_settings(tiny_proxy(tiny_data), rungs=1))
    report = evaluation.step()
    assert report["status"] == "ok" and report["done"] is True and report["extra"]["steps"] == 16


# ---- the driver: pruned children are recorded, rewarded and fed


class ToyReward:
    failed_reward = -1.0

    def __call__(self, accuracy, latencies):
        if accuracy is None or not 0 <= accuracy <= 1:
            raise ValueError(f"bad accuracy {accuracy!r}")
        return accuracy * (latencies["pixel1"] / 75.0) ** -0.07


class RecordingStrategy(RandomStrategy):
    """Random search that remembers what it was fed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fed: list[tuple[tuple, float]] = []

    def observe(self, proposal, reward):
        self.fed.append((tuple(proposal.indices), reward))


def make_run(tmp_path, samples=4, feed_failures=True):
    space = load_space("mnasnet-small")
    store = ResultStore(str(tmp_path / "results.sqlite"))
    strategy = RecordingStrategy(space.choice_counts, seed=0)
    run = SearchRun(space, strategy, ToyReward(), store, samples=samples, run_dir=str(tmp_path),
                    feed_failures=feed_failures)
    return run, store, strategy


def pruned(accuracy=0.4, ms=70.0, rung=1):
    result = {"status": "pruned", "latencies": {"pixel1": ms}, "latency_source": "pixel1", "train_seconds": 0.5,
              "extra": {"rung": rung, "rungs": 4, "steps": 10}}
    if accuracy is not None:
        result["accuracy"] = accuracy
    return result


def test_a_pruned_child_is_stored_with_its_reward_and_fed(tmp_path):
    run, store, strategy = make_run(tmp_path, samples=1)
    config = run.next_config("t0")
    record = run.complete("t0", pruned(0.4, 70.0, rung=2))
    expected = ToyReward()(0.4, {"pixel1": 70.0})
    assert record["status"] == "pruned" and record["failure_code"] is None
    assert record["reward"] == pytest.approx(expected) and record["reward"] != ToyReward.failed_reward
    row = store.child("t0")
    assert row["status"] == "pruned" and row["accuracy"] == 0.4 and row["latency_ms"] == 70.0
    assert row["reward"] == pytest.approx(expected) and row["extra"]["rung"] == 2
    assert strategy.fed == [(tuple(config["indices"]), pytest.approx(expected))]
    assert run.best_reward is None            # a partly trained child's reward is not a search's best
    assert store.count(status="pruned") == 1 and run.finished and run.in_flight == {}


def test_pruned_children_are_fed_even_when_failures_are_not(tmp_path):
    run, _, strategy = make_run(tmp_path, samples=2, feed_failures=False)
    first, _ = run.next_config("t0"), run.next_config("t1")
    run.complete("t0", pruned(0.3))
    run.complete("t1", {"status": "failed", "failure_code": "nan_loss", "failure_detail": "diverged"})
    assert [indices for indices, _ in strategy.fed] == [tuple(first["indices"])]


def test_a_pruned_child_without_accuracy_or_latency_is_a_failure(tmp_path):
    run, store, strategy = make_run(tmp_path, samples=3)
    for i in range(3):
        run.next_config(f"t{i}")
    run.complete("t0", pruned(accuracy=None))
    run.complete("t1", dict(pruned(0.5), latencies={}))
    run.complete("t2", pruned(accuracy=3.0))                # the reward rejects it
    rows = {r["trial_id"]: r for r in store.records()}
    assert rows["t0"]["status"] == "failed" and rows["t0"]["failure_code"] == "bad_result"
    assert rows["t1"]["status"] == "failed" and rows["t1"]["failure_code"] == "no_latency"
    assert rows["t2"]["status"] == "failed" and rows["t2"]["failure_code"] == "bad_result"
    assert all(r["reward"] == ToyReward.failed_reward for r in rows.values())
    assert [reward for _, reward in strategy.fed] == [ToyReward.failed_reward] * 3


def test_summary_counts_pruned_children(tmp_path):
    run, _, _ = make_run(tmp_path, samples=4)
    for i in range(4):
        run.next_config(f"t{i}")
    run.complete("t0", {"accuracy": 0.8, "latencies": {"pixel1": 70.0}, "latency_source": "pixel1"})
    run.complete("t1", pruned(0.2))
    run.complete("t2", pruned(0.3))
    run.complete("t3", {"status": "failed", "failure_code": "oom", "failure_detail": "out of memory"})
    summary = run.summary()
    assert (summary["done"], summary["pruned"], summary["failed"]) == (4, 2, 1)
    assert summary["best_reward"] == pytest.approx(ToyReward()(0.8, {"pixel1": 70.0}))


def test_resume_replays_a_stored_pruned_child_with_its_reward(tmp_path):
    run, store, _ = make_run(tmp_path, samples=2)
    config = run.next_config("t0")
    saved = (tmp_path / STATE_FILE).read_text()          # state: t0 in flight
    run.complete("t0", pruned(0.4))                      # stored, then the driver dies before saving the state
    (tmp_path / STATE_FILE).write_text(saved)
    store.close()
    resumed, _, strategy = make_run(tmp_path, samples=2)
    resumed.load()
    assert strategy.fed == [(tuple(config["indices"]), pytest.approx(ToyReward()(0.4, {"pixel1": 70.0})))]
    assert resumed.retry == [] and resumed.next_config("t1")["sample"] == 1


# ---- the scheduler section of a search config


def test_scheduler_defaults_and_rungs():
    config = SearchConfig.from_dict({})
    assert config.scheduler_settings() == Scheduler()
    assert Scheduler().name == "none" and config.rungs == 1
    assert SearchConfig.from_dict({"scheduler": {"rungs": 6}}).rungs == 1        # none: nothing is cut
    asha = SearchConfig.from_dict({"scheduler": {"name": "asha"}})
    assert asha.rungs == Scheduler().rungs == 4
    assert asha.scheduler_settings() == Scheduler(name="asha")
    custom = SearchConfig.from_dict({"scheduler": {"name": "asha", "rungs": 3, "grace_rungs": 2,
                                                   "reduction_factor": 3, "rung_heldout": 64}})
    assert custom.rungs == 3 and custom.scheduler_settings().rung_heldout == 64


@pytest.mark.parametrize("scheduler, needle", [
    ({"patience": 3}, r"scheduler: unknown setting\(s\) patience"),
    ({"name": "hyperband"}, r"my\.yaml: scheduler\.name must be one of none, asha, got 'hyperband'"),
    ({"name": "asha", "rungs": 1}, r"scheduler\.rungs must be at least 2"),
    ({"name": "asha", "reduction_factor": 1}, r"scheduler\.reduction_factor must be at least 2"),
    ({"name": "asha", "rungs": 3, "grace_rungs": 3}, r"scheduler\.grace_rungs \(3\) must be below rungs \(3\)"),
    ({"name": "asha", "rungs": 2.5}, r"scheduler\.rungs must be a positive integer, got 2\.5"),
    ({"name": "asha", "reduction_factor": "2"}, r"scheduler\.reduction_factor must be a positive integer"),
    ({"grace_rungs": True}, r"scheduler\.grace_rungs must be a positive integer"),
    ({"rung_heldout": 0}, r"scheduler\.rung_heldout must be a positive integer"),
    ({"rungs": 0}, r"scheduler\.rungs must be a positive integer"),
])
def test_bad_scheduler_settings_name_the_field(scheduler, needle):
    with pytest.raises(ValueError, match=needle):
        SearchConfig.from_dict({"scheduler": scheduler}, source="my.yaml")


def test_the_commented_example_in_the_default_config_is_valid():
    import yaml

    path = os.path.join(ROOT, "configs", "default.yaml")
    shipped = SearchConfig.load(path)
    assert shipped.rungs == 1 and shipped.scheduler_settings().name == "none"    # off by default
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    start = lines.index("# scheduler:")
    block = ["scheduler:"] + [line[1:] for line in lines[start + 1:] if line.startswith("#   ")]
    example = yaml.safe_load("\n".join(block))["scheduler"]
    uncommented = SearchConfig.from_dict({**shipped.to_dict(), "scheduler": example})
    assert uncommented.scheduler_settings() == Scheduler(name="asha") and uncommented.rungs == 4
    assert uncommented.rungs <= ProxyConfig.from_dict(shipped.proxy).total_steps


def test_a_scheduler_section_that_is_not_a_mapping_is_refused():
    with pytest.raises(ValueError, match="scheduler must be a mapping"):
        SearchConfig.from_dict({"scheduler": "asha"})


def test_more_rungs_than_proxy_steps_is_refused_before_ray(tmp_path, monkeypatch, capsys):
    """The smoke proxy trains 4 steps (256 images, batches of 64): 5 rungs would leave a rung training nothing."""
    import yaml

    from mnas import cli
    from mnas.commands.search import _check_rungs

    smoke = ProxyConfig(train_subset=256, batch_size=64)
    assert smoke.total_steps == 4 and ProxyConfig(steps=3).total_steps == 3
    assert ProxyConfig(epochs=2).total_steps == 2 * (20000 // 64)
    _check_rungs(4, smoke)                              # one step a rung: fine
    with open(os.path.join(ROOT, "configs", "smoke.yaml")) as handle:
        config = yaml.safe_load(handle)
    config["scheduler"] = {"name": "asha", "rungs": 5}
    (tmp_path / "five.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    status = cli.main(["search", "--config", str(tmp_path / "five.yaml"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2 and "scheduler.rungs (5) exceeds the proxy's 4 training steps" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_make_scheduler_is_asha_on_the_rungs_and_the_score():
    """ASHA as configured: it compares `score` (higher is better) at rung `grace_rungs`, promotes the first child
    to reach a rung, stops a later one below the median, and stops every child at its last rung."""
    from ray.tune.schedulers import TrialScheduler

    from mnas.search.tune import make_scheduler

    assert make_scheduler(None) is None
    assert make_scheduler(SearchConfig().scheduler_settings()) is None
    settings = SearchConfig.from_dict({"scheduler": {"name": "asha", "rungs": 4, "grace_rungs": 2}})
    scheduler = make_scheduler(settings.scheduler_settings())
    trials = [SimpleNamespace(trial_id=f"t{i}") for i in range(4)]
    for trial in trials:
        scheduler.on_trial_add(None, trial)

    def report(trial, rung, score):
        return scheduler.on_trial_result(None, trial, {"training_iteration": rung, "score": score})

    assert report(trials[1], 1, 0.0) == TrialScheduler.CONTINUE      # before the grace rung: never stopped
    assert report(trials[0], 2, 0.5) == TrialScheduler.CONTINUE      # first at rung 2: promoted
    assert report(trials[1], 2, 0.2) == TrialScheduler.STOP          # below the median: lower score loses
    assert report(trials[2], 2, 0.9) == TrialScheduler.CONTINUE
    assert report(trials[2], 4, 0.1) == TrialScheduler.STOP          # the last rung ends every child


# ---- a search through Ray where ASHA stops children


SAMPLES = 6


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_DATA, reason="needs Debian's dataset-fashion-mnist (make test installs it)")
def test_asha_search_through_ray_stops_some_children(tmp_path):
    """With one worker the children reach their rungs in sample order and scores are deterministic, so which
    children ASHA stops is the same on every run (several are: the first child promotes, later ones below the
    running median of a rung stop there)."""
    import yaml

    with open(os.path.join(ROOT, "configs", "smoke.yaml")) as handle:
        config = yaml.safe_load(handle)
    config.update(samples=SAMPLES, workers=1,
                  scheduler={"rungs": 4, "reduction_factor": 2, "grace_rungs": 1, "rung_heldout": 128})
    path = tmp_path / "asha.yaml"
    path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    ray_tmp = tempfile.mkdtemp(prefix="ma", dir="/tmp")   # Ray's socket paths must stay short
    try:
        result = subprocess.run([sys.executable, "launch.py", "search", "--config", str(path), "--out",
                                 str(run_dir), "--scheduler", "asha"], cwd=ROOT, capture_output=True, text=True,
                                check=False, timeout=600, env=dict(os.environ, MNAS_RAY_TMPDIR=ray_tmp))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    listing = subprocess.run([sys.executable, "launch.py", "results", str(run_dir), "--json"], cwd=ROOT,
                             capture_output=True, text=True, check=True)
    children = json.loads(listing.stdout)
    assert sorted(c["sample"] for c in children) == list(range(SAMPLES))      # each sample exactly once
    by_status = {status: [c for c in children if c["status"] == status] for status in ("ok", "pruned", "failed")}
    assert by_status["failed"] == [], [c["failure_detail"] for c in by_status["failed"]]
    assert by_status["pruned"], "ASHA stopped no child"
    assert by_status["ok"], "ASHA stopped every child"
    for c in by_status["pruned"]:
        assert 1 <= c["extra"]["rung"] < c["extra"]["rungs"] == 4
        assert 0 <= c["accuracy"] <= 1 and c["latency_ms"] > 0 and c["reward"] > 0
    for c in by_status["ok"]:
        assert "rung" not in c["extra"] and c["extra"]["steps"] == 256 // 64
        assert 0 <= c["accuracy"] <= 1 and c["reward"] > 0
    stopped = len(by_status["pruned"])
    assert result.stderr.count("stopped at rung") == stopped
    assert f"{stopped} stopped early" in result.stderr

    table = subprocess.run([sys.executable, "launch.py", "results", str(run_dir)], cwd=ROOT,
                           capture_output=True, text=True, check=True)
    assert f"{SAMPLES} children: {len(by_status['ok'])} ok, {stopped} pruned" in table.stdout + table.stderr
    only_pruned = subprocess.run([sys.executable, "launch.py", "results", str(run_dir), "--json", "--status",
                                  "pruned"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert sorted(c["sample"] for c in json.loads(only_pruned.stdout)) == \
        sorted(c["sample"] for c in by_status["pruned"])
    state = json.loads((run_dir / "searcher_state.json").read_text())
    assert state["issued"] == SAMPLES and state["in_flight"] == {}
    assert state["strategy"]["step"] == SAMPLES // config["controller"]["batch_size"]   # pruned ones fed to PPO
