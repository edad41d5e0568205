"""The pure parts of benchmarks/proxy_fidelity.py (issue 17, part 1): which children it trains, under what name,
and that its proxy is the collection's."""

import json

import pytest

from conftest import load_benchmark


@pytest.fixture(scope="module")
def fidelity():
    return load_benchmark("proxy_fidelity")


def test_children_follow_the_collection_and_are_named_by_run_and_sample(fidelity, tmp_path):
    import random

    from mnas.search.registry import load_space

    space = load_space("mnasnet")
    rng = random.Random(0)
    g = [list(space.sample_indices(rng)) for _ in range(4)]
    table = tmp_path / "bench.csv"
    # two runs whose sample numbers both start at 0, listed out of order; one failed child
    table.write_text("run,sample,indices,accuracy,status\n"
                     f'first,1,"{g[0]}",0.81,ok\n'
                     f'second,0,"{g[1]}",0.92,ok\n'
                     f'first,0,"{g[2]}",,failed\n'
                     f'first,2,"{g[3]}",0.83,ok\n')
    chosen = fidelity.children(str(table), 3)
    assert [label for label, _, _ in chosen] == ["first:1", "first:2", "second:0",
                                                 "mnasnet-a1", "mobilenetv2", "mnasnet-small"]
    assert chosen[0][1] == space.decode(g[0]) and chosen[0][2] == pytest.approx(0.81)
    assert [acc for _, _, acc in chosen[3:]] == [None, None, None]       # the references are scored here
    with pytest.raises(ValueError, match="3 trained children; 4 asked for"):
        fidelity.children(str(table), 4)


def test_proxy_is_the_collections_and_the_long_training_only_longer(fidelity, tmp_path):
    import dataclasses

    import yaml

    proxy, long = fidelity.proxy_configs()
    with open(fidelity.CONFIG, encoding="utf-8") as handle:
        assert proxy.split == yaml.safe_load(handle)["proxy"]["split"] == "file-order"
    changed = {f.name for f in dataclasses.fields(proxy) if getattr(proxy, f.name) != getattr(long, f.name)}
    assert changed == set(fidelity.LONG)
    assert long.train_subset + long.heldout <= 60000 and long.train_subset > proxy.train_subset


def test_a_rerun_trains_nothing_the_file_holds_and_ranks_the_two_trainings(fidelity, tmp_path, monkeypatch, capsys):
    from mnas.search.registry import load_space

    zeros = [0] * len(load_space("mnasnet").sample_indices(__import__("random").Random(0)))
    table = tmp_path / "bench.csv"
    table.write_text("run,sample,indices,accuracy,status\n" + "".join(
        f'r,{i},"{zeros}",0.8{i},ok\n' for i in range(3)))
    lines = [{"label": f"r:{i}", "kind": "long", "status": "ok", "accuracy": 0.90 + i / 100, "cpu_seconds": 200}
             for i in range(3)]
    for k, name in enumerate(fidelity.REFERENCES):
        lines += [{"label": name, "kind": kind, "status": "ok", "accuracy": acc + k / 100, "cpu_seconds": 200}
                  for kind, acc in (("long", 0.95), ("proxy", 0.85))]
    jsonl = tmp_path / "runs.jsonl"
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))

    def refuse(*args):
        raise AssertionError(f"trained again: {args[0]}")

    monkeypatch.setattr(fidelity, "_train", refuse)
    assert fidelity.main(["--children", "3", "--table", str(table), "--jsonl", str(jsonl)]) == 0
    out = capsys.readouterr().out
    assert "| r:0 | 0.8000 | 0.9000 | 200 |" in out
    assert "**6 children**: Spearman 1.000, Kendall 1.000" in out      # both orders agree in this made-up file


def test_workers_must_be_positive(fidelity, capsys):
    with pytest.raises(SystemExit) as exit_:
        fidelity.main(["--jsonl", "unused.jsonl", "--workers", "0"])
    assert exit_.value.code == 2 and "--workers must be at least 1" in capsys.readouterr().err
