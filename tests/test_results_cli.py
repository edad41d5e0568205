"""`launch.py results`: the table, JSON, --pareto, --top, --status, --sort, --export, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mnas import cli as mnas_cli
from mnas.results.export import read_export
from mnas.results.store import ResultStore

REPO = Path(__file__).resolve().parents[1]

A1 = ("r1_k3_s11_e1_i32_o16_noskip r2_k3_s22_e6_i16_o24 r3_k5_s22_e3_i24_o40_se0.25 r4_k3_s22_e6_i40_o80 "
      "r2_k3_s11_e6_i80_o112_se0.25 r3_k5_s22_e6_i112_o160_se0.25 r1_k3_s11_e6_i160_o320")
SMALL = ("r1_k3_s11_e1_i16_o8 r1_k3_s22_e3_i8_o16 r2_k3_s22_e6_i16_o16 r4_k5_s22_e6_i16_o32_se0.25 "
         "r3_k3_s11_e6_i32_o32_se0.25 r3_k5_s22_e6_i32_o88_se0.25 r1_k3_s11_e6_i88_o144")


def arch(i: int) -> str:
    return A1.replace("i160_o320", f"i160_o{320 + 8 * i}")


# trial, accuracy, latency, reward, status: fast/accurate trade-offs, one dominated, one failed, one pruned.
CHILDREN = [
    ("fast", 0.60, 20.0, 0.65, "ok", SMALL),
    ("mid", 0.72, 60.0, 0.73, "ok", arch(1)),
    ("best", 0.76, 78.0, 0.758, "ok", A1),
    ("dominated", 0.70, 90.0, 0.69, "ok", arch(2)),
    ("oom", None, None, -1.0, "failed", arch(3)),
    ("nan", None, None, -1.0, "failed", arch(4)),
    ("stopped", 0.40, 30.0, 0.42, "pruned", arch(5)),
]


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    with ResultStore(run) as store:
        for i, (trial, accuracy, latency, reward, status, blocks) in enumerate(CHILDREN):
            store.add_child({
                "trial_id": trial, "sample": i, "arch": blocks, "status": status, "accuracy": accuracy,
                "latency_ms": latency, "latency_source": "pixel1-predicted" if latency else None, "reward": reward,
                "params": 3_900_000 + i, "madds": 312_000_000, "indices": [i] * 4,
                "failure_code": {"oom": "oom", "nan": "nan_loss"}.get(trial),
                "failure_detail": {"oom": "out of memory at step 4", "nan": "nan loss"}.get(trial),
            })
        store.add_child({"trial_id": "oom2", "arch": arch(6), "status": "failed", "failure_code": "oom",
                         "failure_detail": "out of memory at step 9"})
    return run


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = mnas_cli.main(["results", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def rows_of(out: str) -> list[list[str]]:
    """The table's data rows, split on whitespace (the arch's block strings come last), after its legend."""
    lines = out.splitlines()
    assert lines[0].startswith("# rank = ") and ":RANK (the 'ok' children by reward" in lines[0]
    assert ":pareto:I (the Pareto front by latency" in lines[0] and " train --arch " in lines[0]
    assert lines[1].split() == ["rank", "pareto", "trial", "reward", "accuracy", "latency_ms", "source", "params_M",
                                "madds_M", "status", "arch"]
    return [line.split() for line in lines[2:-1]]


def test_table_lists_every_child_ranked_by_reward(run_dir, capsys):
    code, out, err = cli(capsys, run_dir)
    assert code == 0 and err == ""
    rows = rows_of(out)
    assert [row[2] for row in rows][:5] == ["best", "mid", "dominated", "fast", "stopped"]
    # rank and pareto are what `train --arch RUN:RANK` and `RUN:pareto:I` take, not the row's position
    assert [row[:2] for row in rows][:5] == [["1", "3"], ["2", "2"], ["3", "-"], ["4", "1"], ["-", "-"]]
    for trial, *_, blocks in CHILDREN:
        assert any(row[2] == trial and " ".join(row[-7:]) == blocks for row in rows), trial
    best = rows[0]
    assert best[3:10] == ["0.7580", "0.7600", "78.00", "pixel1-predicted", "3.90", "312.0", "ok"]
    assert out.splitlines()[-1] == "8 children: 4 ok, 3 failed, 1 pruned; failures: 2 x oom, 1 x nan_loss"


def test_json_is_a_list_with_the_required_keys(run_dir, capsys):
    code, out, _ = cli(capsys, run_dir, "--json")
    assert code == 0
    children = json.loads(out)
    assert len(children) == 8
    for child in children:
        assert {"arch", "accuracy", "latency_ms", "reward", "status", "trial_id", "indices"} <= child.keys()
    by_trial = {child["trial_id"]: child for child in children}
    assert by_trial["best"]["arch"] == A1 and by_trial["best"]["params"] == 3_900_002
    assert by_trial["fast"]["indices"] == [0, 0, 0, 0]
    assert by_trial["oom2"]["accuracy"] is None and by_trial["oom"]["failure_code"] == "oom"
    assert by_trial["oom"]["failure_detail"] == "out of memory at step 4"


def test_pareto_shows_the_front_by_latency(run_dir, capsys):
    code, out, _ = cli(capsys, run_dir, "--pareto", "--json")
    assert code == 0
    assert [child["trial_id"] for child in json.loads(out)] == ["fast", "mid", "best"]
    code, out, _ = cli(capsys, run_dir, "--pareto", "--sort", "reward")
    assert [row[2] for row in rows_of(out)] == ["best", "mid", "fast"]


def test_top_and_sort(run_dir, capsys):
    _, out, _ = cli(capsys, run_dir, "--top", "2", "--json")
    assert [child["trial_id"] for child in json.loads(out)] == ["best", "mid"]
    _, out, _ = cli(capsys, run_dir, "--top", "2", "--sort", "latency_ms")
    assert [row[2] for row in rows_of(out)] == ["fast", "stopped"]
    _, out, _ = cli(capsys, run_dir, "--sort", "accuracy", "--status", "ok", "--json")
    assert [child["trial_id"] for child in json.loads(out)] == ["best", "mid", "dominated", "fast"]


def test_status_filter(run_dir, capsys):
    code, out, _ = cli(capsys, run_dir, "--status", "failed")
    assert code == 0
    assert sorted(row[2] for row in rows_of(out)) == ["nan", "oom", "oom2"]
    assert "8 children" in out.splitlines()[-1]  # the summary is about the whole run


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_writes_the_rows_shown(run_dir, tmp_path, capsys, suffix):
    target = tmp_path / f"front{suffix}"
    code, out, err = cli(capsys, run_dir, "--pareto", "--export", target)
    assert code == 0
    exported = read_export(target)
    assert list(exported["trial_id"]) == ["fast", "mid", "best"]
    assert exported["indices"].iloc[0] == [0, 0, 0, 0]
    assert err.strip() == f"wrote 3 children to {target}"


def test_empty_run(tmp_path, capsys):
    ResultStore(tmp_path).close()
    code, out, _ = cli(capsys, tmp_path)
    assert code == 0 and out.splitlines() == ["(no children)", "no children yet"]
    code, out, _ = cli(capsys, tmp_path, "--json")
    assert json.loads(out) == []


@pytest.mark.parametrize("argv, message", [
    (["--top", "0"], "--top must be a positive integer"),
    (["--pareto", "--status", "failed"], "--pareto uses 'ok' children only"),
    (["--export", "out.xlsx"], "unknown format ('.xlsx')"),
])
def test_bad_options_give_one_line_and_status_2(run_dir, capsys, argv, message):
    code, out, err = cli(capsys, run_dir, *argv)
    assert code == 2 and out == ""  # nothing printed before the error
    assert err.count("\n") == 1 and err.startswith("mnas results: error: ") and message in err


def _launch(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "launch.py"), "results", *map(str, argv)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_bad_run_dirs_exit_2_with_one_line(tmp_path):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "results.sqlite").write_text("not a database")
    cases = {tmp_path / "missing": "no such run directory",
             tmp_path: "is it a run directory?",
             garbage: "is not an SQLite database"}
    for path, message in cases.items():
        done = _launch(path)
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert sorted(os.listdir(tmp_path)) == ["garbage"]  # nothing was created


def test_the_command_runs_as_a_script(run_dir):
    done = _launch(run_dir, "--top", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert [child["trial_id"] for child in json.loads(done.stdout)] == ["best"]


def test_the_command_needs_no_tensorflow_or_ray(run_dir):
    code = textwrap.dedent(f"""
        import argparse, sys
        sys.path.insert(0, {str(REPO)!r})
        sys.modules["tensorflow"] = None
        sys.modules["ray"] = None
        from mnas.commands import results
        parser = argparse.ArgumentParser()
        results.add_arguments(parser)
        sys.exit(results.run(parser.parse_args([{str(run_dir)!r}, "--pareto"])))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "best" in done.stdout and A1 in done.stdout


def test_a_child_stopped_early_ranks_after_fully_trained_ones_by_reward(tmp_path, capsys):
    """Scored part-way through its training (at a rung), a pruned child's reward does not compete."""
    run = tmp_path / "run"
    with ResultStore(run) as store:
        for i, (trial, reward, status) in enumerate([("trained", 0.70, "ok"), ("lucky", 0.90, "pruned"),
                                                     ("broken", 0.0, "failed"), ("better", 0.75, "ok")]):
            store.add_child({"trial_id": trial, "sample": i, "arch": arch(i), "indices": [i],
                             "accuracy": None if status == "failed" else reward, "latency_ms": 70.0,
                             "latency_source": "pixel1-predicted", "reward": reward, "status": status,
                             "failure_code": "oom" if status == "failed" else None})
    for argv in ((), ("--sort", "accuracy")):
        _, out, _ = cli(capsys, run, *argv)
        assert [row[2] for row in rows_of(out)] == ["better", "trained", "lucky", "broken"], argv
    _, out, _ = cli(capsys, run, "--sort", "latency_ms", "--json")     # a plain sort otherwise
    assert [child["trial_id"] for child in json.loads(out)] == ["trained", "lucky", "broken", "better"]
    _, out, _ = cli(capsys, run, "--status", "pruned", "--json")
    assert [child["trial_id"] for child in json.loads(out)] == ["lucky"]
