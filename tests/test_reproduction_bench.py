"""The pure parts of benchmarks/reproduction.py and reproduction_table1.py (issue 18): the Fig. 6 statistics, the
architecture agreement against a reference, the cost formula, and table1's skip/resume bookkeeping with a fake
trainer.

No search, no training, no Ray: those are the benchmark.
"""

import json
import os

import pytest

from conftest import load_benchmark

from mnas.search.registry import load_architecture, load_space

@pytest.fixture(scope="module")
def bench():
    return load_benchmark("reproduction")


@pytest.fixture(scope="module")
def table1():
    return load_benchmark("reproduction_table1")


@pytest.fixture(scope="module")
def space():
    return load_space("mnasnet")


# -- Fig. 6
def test_fig6_summary_counts_shares_around_the_target(bench):
    s = bench.fig6_summary([5.0, 9.5, 10.0, 10.5, 20.0], target=10.0)
    assert s["n"] == 5
    assert s["below"] == pytest.approx(3 / 5)            # 5, 9.5, 10: at or below T
    assert s["near"] == pytest.approx(3 / 5)             # 9.5, 10, 10.5: within T +- 10%
    assert s["p50"] == pytest.approx(10.0)
    assert sum(s["hist"]) == pytest.approx(1.0)
    json.dumps(s)                                        # JSON-ready: no numpy left


def test_fig6_verdict_hard_below_soft_around(bench):
    hard = bench.fig6_summary([60, 65, 70, 72, 74, 74, 75, 73, 71, 69], target=75)
    soft = bench.fig6_summary([40, 50, 60, 70, 80, 90, 100, 110, 120, 130], target=75)
    v = bench.fig6_verdict(soft, hard)
    assert v["pushes"] and v["spreads"]
    assert not bench.fig6_verdict(hard, hard)["spreads"]


def test_tail_takes_the_last_share(bench):
    assert bench.tail(list(range(8)), 0.25) == [6, 7]
    assert bench.tail([1, 2, 3], 0.01) == [3]            # at least one
    assert bench.tail([], 0.5) == []


# -- part 4
def test_reference_genotype_of_a1_maps_block5_filters_to_the_nearest_option(bench, space):
    genotype, notes = bench.reference_genotype(space, load_architecture("mnasnet-a1"))
    assert notes == ["block 5 filters 112 -> 120"]
    a1, nearest = load_architecture("mnasnet-a1"), space.decode(genotype)
    for ref, mine in zip(a1.blocks, nearest.blocks):
        assert (mine.op, mine.kernel, mine.se_ratio, mine.skip, mine.repeats) == \
               (ref.op, ref.kernel, ref.se_ratio, ref.skip, ref.repeats)
    assert [b.output_filters for b in nearest.blocks] == [16, 24, 40, 80, 120, 160, 320]


def test_reference_genotype_of_a_member_is_its_own_genotype(bench, space):
    mbv2 = load_architecture("mobilenetv2")
    assert bench.reference_genotype(space, mbv2) == (space.encode(mbv2), [])


def test_agreement_counts_a_hand_made_case(bench, space):
    reference = [0] * len(space.choice_counts)
    other = list(reference)
    other[0] = 1                                          # block 1's op differs; everything else agrees
    result = bench.agreement(space, [tuple(reference), tuple(other)], reference)
    assert result["models"] == 2
    assert result["types"]["op"]["agree"] == pytest.approx(13 / 14)     # 7 blocks x 2 models
    assert result["types"]["op"]["chance"] == pytest.approx(1 / 4)
    assert result["types"]["kernel"]["agree"] == 1.0 and result["types"]["kernel"]["chance"] == 0.5
    assert result["blocks"]["op"][0] == 0.5 and result["blocks"]["op"][1] == 1.0
    assert result["overall"]["agree"] == pytest.approx(83 / 84)
    counts = space.choice_counts
    assert result["overall"]["chance"] == pytest.approx(sum(1 / n for n in counts) / len(counts))


def test_pattern_shares_of_a_hand_made_genotype(bench, space):
    genotype = [0] * len(space.choice_counts)
    for position, decision in enumerate(space.decisions):
        if decision.name == "kernel" and decision.block >= 3:            # blocks 4-7 (0-based 3-6)
            genotype[position] = decision.options.index(5)
        if decision.name == "op" and decision.block == 0:
            genotype[position] = decision.options.index("mbconv3")
    shares = bench.pattern_shares(space, [genotype])
    assert shares["5x5 kernels in blocks 4-7 (later stages)"]["share"] == 1.0
    assert shares["5x5 kernels in blocks 1-3"]["share"] == 0.0
    assert shares["MBConv3 in blocks 1-3 (early)"]["share"] == pytest.approx(1 / 3)
    assert shares["MBConv3 in blocks 1-3 (early)"]["chance"] == 0.25
    assert shares["SE in blocks 3-6 (the middle)"]["share"] == 0.0


def test_a1_shows_the_papers_patterns(bench, space):
    genotype, _ = bench.reference_genotype(space, load_architecture("mnasnet-a1"))
    shares = bench.pattern_shares(space, [genotype])
    assert shares["SE in blocks 3-6 (the middle)"]["share"] == 0.75       # blocks 3, 5, 6
    assert shares["SE in blocks 1, 2, 7"]["share"] == 0.0


# -- part 5
def test_cost_formula(bench):
    cost = bench.device_hours(children=8000, images_per_child=6_155_835, seconds_per_image=0.1376, parallel=64)
    assert cost["child_hours"] == pytest.approx(6_155_835 * 0.1376 / 3600)
    assert cost["device_hours"] == pytest.approx(8000 * cost["child_hours"])
    assert cost["wall_hours"] == pytest.approx(cost["device_hours"] / 64)


def test_child_cpu_seconds_prefers_the_measured_cpu_time(bench):
    assert bench.child_cpu_seconds({"extra": {"cpu_seconds": 75.0}, "train_seconds": 170.0}, threads=1) == 75.0
    assert bench.child_cpu_seconds({"extra": {}, "train_seconds": 50.0, "eval_seconds": 10.0}, threads=2) == 120.0


def test_run_cost_of_fake_records(bench):
    records = [{"extra": {"cpu_seconds": 3600.0}, "train_seconds": 4000.0, "eval_seconds": 10.0,
                "started_at": "2026-12-02T10:00:00+00:00", "finished_at": "2026-12-02T11:00:00+00:00"},
               {"extra": {}, "train_seconds": 1800.0, "eval_seconds": 0.0,
                "started_at": "2026-12-02T10:30:00+00:00", "finished_at": "2026-12-02T12:00:00+00:00"}]
    cost = bench.run_cost(records, threads=1, workers=2, ms_per_image=100.0)
    assert cost["children"] == 2 and cost["cpu_seconds_measured"] == 1
    assert cost["cpu_hours"] == pytest.approx(1.5)
    assert cost["wall_hours"] == pytest.approx(2.0)
    assert cost["this_proxy_8000"]["cpu_hours"] == pytest.approx(0.75 * 8000)
    assert cost["paper"]["tpu_hours"] == pytest.approx(4.5 * 24 * 64)
    assert cost["paper_proxy_here"]["child_hours"] == pytest.approx(6_155_835 * 0.1 / 3600)


def test_run_cost_leaves_out_the_stops_of_a_run_resumed_across_sessions(bench):
    def child(start, end):
        return {"extra": {"cpu_seconds": 60.0}, "started_at": f"2026-12-02T{start}:00+00:00",
                "finished_at": f"2026-12-02T{end}:00+00:00"}

    # 10:00-11:00 (two workers overlapping, 5 minutes between children), stopped, resumed 15:00-15:30.
    records = [child("10:00", "10:30"), child("10:10", "10:40"), child("10:45", "11:00"),
               child("15:00", "15:20"), child("15:25", "15:30")]
    cost = bench.run_cost(records, threads=1, workers=2, ms_per_image=None)
    assert cost["stretches"] == 2 and cost["wall_hours"] == pytest.approx(1.5)
    assert "1.5 h wall from the first child's start to the last one's end, less 1 stop(s) of over 10 minutes" \
        in bench.cost_lines(cost)[0]
    assert bench.run_cost(records[:3], threads=1, workers=2, ms_per_image=None)["stretches"] == 1
    assert "less" not in bench.cost_lines(bench.run_cost(records[:3], threads=1, workers=2, ms_per_image=None))[0]


def test_paper_ms_per_image_reads_the_child_cost_block(bench, tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("x\n<!-- child-cost -->\n| child | madds | ms |\n|---|---|---|\n| mnasnet-a1 | 312M | 137.6 | "
                    "235 CPU-hours |\n<!-- /child-cost -->\n")
    assert bench.paper_ms_per_image(str(path)) == 137.6
    assert bench.paper_ms_per_image(str(tmp_path / "missing.md")) is None


# -- part 3: table1's bookkeeping
def _finish(folder, epochs, top1):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({}, f)
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump({"epochs": epochs, "final": {"eval_top1": top1, "raw_eval_top1": top1 - 0.01,
                                               "images_per_second": 100.0}}, f)


def test_job_state(table1, tmp_path):
    folder = str(tmp_path / "m" / "seed0")
    assert table1.job_state(folder, 2) == "new"
    os.makedirs(folder)
    (tmp_path / "m" / "seed0" / "config.json").write_text("{}")
    assert table1.job_state(folder, 2) == "resume"
    _finish(folder, 1, 0.9)
    assert table1.job_state(folder, 2) == "resume"          # fewer epochs than asked: continue it
    assert table1.job_state(folder, 1) == "done"


def test_table1_skips_finished_runs_and_resumes_interrupted_ones(table1, tmp_path):
    out = str(tmp_path)
    models = {"a": ("mnasnet-a1", ()), "b": ("mobilenetv2", ("--depth-multiplier", "0.35"))}
    _finish(os.path.join(out, "a", "seed0"), 2, 0.90)                       # finished earlier
    calls = []

    def crashing(argv):                                   # starts b/seed1, then dies before the end
        calls.append(argv)
        folder = argv[argv.index("--out") + 1]
        if folder.endswith(os.path.join("b", "seed1")):
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "config.json"), "w") as f:
                json.dump({}, f)
            return 1
        _finish(folder, int(argv[argv.index("--epochs") + 1]), 0.80 + 0.01 * int(argv[argv.index("--seed") + 1]))
        return 0

    jobs = table1.plan_jobs(out, models, seeds=2, epochs=2, train_args=("--threads", "1"))
    assert [j["state"] for j in jobs] == ["done", "new", "new", "new"]
    table1.run_jobs(jobs, crashing, epochs=2, log=lambda text: None)
    assert len(calls) == 3                                # a/seed0 was skipped
    assert calls[1][-2:] == ["--threads", "1"] and "--depth-multiplier" in calls[1]
    assert [j["state"] for j in jobs] == ["done", "done", "done", "resume"]

    calls.clear()
    jobs = table1.plan_jobs(out, models, seeds=2, epochs=2)
    assert [j["state"] for j in jobs] == ["done", "done", "done", "resume"]
    assert jobs[3]["argv"][-1] == "--resume"
    table1.run_jobs(jobs, lambda argv: calls.append(argv) or _finish(argv[argv.index("--out") + 1], 2, 0.82) or 0,
                   epochs=2, log=lambda text: None)
    assert len(calls) == 1 and "--resume" in calls[0]

    rows = table1.collect(jobs, {"a": {"latency_ms": 78.0, "params": 3.9e6, "madds": 312e6}})
    by_model = {r["model"]: r for r in rows}
    assert by_model["a"]["accuracy"] == [0.90, 0.81] and by_model["a"]["seeds"] == [0, 1]
    assert by_model["a"]["mean"] == pytest.approx(0.855) and by_model["a"]["sd"] == pytest.approx(0.0636, abs=1e-3)
    assert by_model["b"]["accuracy"] == [0.80, 0.82] and by_model["a"]["latency_ms"] == 78.0


def test_estimate_hours_uses_each_models_throughput(table1):
    jobs = [{"model": "a", "state": "done"}, {"model": "a", "state": "new"}, {"model": "b", "state": "resume"}]
    rows = [{"model": "a", "images_per_second": 100.0}, {"model": "b", "images_per_second": None}]
    # a: 3 epochs x 60,000 / 100; b has no throughput yet and borrows a's
    assert table1.estimate_hours(jobs, rows, epochs=3, train_images=60000) == pytest.approx(2 * 1800 / 3600)
    assert table1.estimate_hours(jobs, [{"model": "a", "images_per_second": None}], 3, 60000) is None


def test_render_table1_from_rows(table1):
    rows = [{"model": "mnasnet-a1", "latency_ms": 79.2, "params": 3.9e6, "madds": 312e6, "accuracy": [0.9, 0.91],
             "mean": 0.905, "sd": 0.007, "seeds": [0, 1], "train_seconds": 5400.0},
            {"model": "mobilenetv2-0.35", "latency_ms": 21.3, "params": 1.7e6, "madds": 59e6, "accuracy": [0.85],
             "mean": 0.85, "sd": None, "seeds": [0]},
            {"model": "found-75-hard", "latency_ms": 70.0, "params": 3e6, "madds": 250e6, "accuracy": [], "mean": None,
             "sd": None, "seeds": []}]
    text = "\n".join(table1.render_table1({"command": "c", "machine": "m", "date": "d", "epochs": 3, "seeds": 2,
                                          "train_images": 60000, "dataset": "fashion-mnist", "train_args": [],
                                          "rows": rows, "left": ["found-75-hard/seed0"]}))
    assert "| mnasnet-a1 | 79.2 | 3.90M | 312M | 90.50% +- 0.70 | 90.00, 91.00 | 3.9M, 312M, 75.2%, 78 ms |" in text
    assert "| 85.00% (1 seed) | 85.00 | 1.7M, 59M, 60.3%, - |" in text    # no published Pixel 1 latency
    assert "3 epochs of 60,000 training images" in text and "Training took 1.5 h" in text
    assert "Not finished yet: found-75-hard/seed0." in text


def test_table1_command_with_a_fake_trainer_then_report(bench, table1, tmp_path, capsys):
    out = str(tmp_path / "t1")

    def fake(argv):
        _finish(argv[argv.index("--out") + 1], int(argv[argv.index("--epochs") + 1]), 0.85)
        return 0

    argv = ["table1", "--models", "found-75-soft,mnasnet-small", "--found", "found-75-soft=mnasnet-a1", "--seeds",
            "1", "--epochs", "1", "--out", out, "--json", str(tmp_path / "t1.json")]
    args = bench.parser().parse_args(argv)
    args.argv = argv[1:]
    assert table1.cmd_table1(args, runner=fake) == 0
    frozen = os.path.join(out, "archs", "found-75-soft.txt")
    assert load_architecture(frozen) == load_architecture("mnasnet-a1")      # frozen for later runs, with its source
    assert table1.frozen_source(frozen) == "mnasnet-a1"
    with open(os.path.join(out, "table1.json")) as f:
        saved = json.load(f)
    assert json.loads((tmp_path / "t1.json").read_text()) == saved       # the report's copy (--json)
    rows = {r["model"]: r for r in saved["rows"]}
    assert rows["mnasnet-small"]["accuracy"] == [0.85]
    assert rows["found-75-soft"]["params"] == 3_887_038 and rows["found-75-soft"]["latency_ms"] > 70
    assert rows["found-75-soft"]["source"] == "mnasnet-a1"
    capsys.readouterr()
    args = bench.parser().parse_args(["report", "--table1-json", str(tmp_path / "t1.json"), "--surrogate-json",
                                      str(tmp_path / "none.json"), "--real-json", str(tmp_path / "none2.json")])
    assert bench.cmd_report(args) == 0
    text = capsys.readouterr().out
    assert "| mnasnet-small | 22.3 |" in text and "not written yet" in text
    assert "* found-75-soft -- mnasnet-a1: `" in text

    # --write: the table goes between its markers, the hand-written prose stays, a result not saved yet leaves
    # its block as it was
    doc = tmp_path / "REPRODUCTION.md"
    doc.write_text("# Prose\n\n<!-- reproduction-table1 -->\nold table\n<!-- /reproduction-table1 -->\n\nMore prose."
                   "\n\n<!-- reproduction-real -->\nearlier real\n<!-- /reproduction-real -->\n")
    args = bench.parser().parse_args(["report", "--table1", out, "--surrogate-json", str(tmp_path / "none.json"),
                                      "--real-json", str(tmp_path / "none2.json"), "--write", "--markdown",
                                      str(doc)])
    assert bench.cmd_report(args) == 0
    written = doc.read_text()
    assert written.startswith("# Prose\n") and "More prose." in written and "old table" not in written
    assert written.count("| mnasnet-small | 22.3 |") == 1 and "earlier real" in written
    assert "\n### Table 1 analogue" in written          # a subsection of the hand-written section


def test_bad_model_name_is_one_line(bench, capsys):
    assert bench.main(["table1", "--models", "nope", "--dry-run"]) == 2
    assert "unknown model(s) nope" in capsys.readouterr().err


@pytest.mark.parametrize("found, message", [("found-75-soft", "expected NAME=ARCH"),
                                            ("found-99=mnasnet-a1", "'found-99' is not a found model"),
                                            ("found-23-hard=/no/such/run:1", "no such run directory")])
def test_bad_found_model_is_one_line_and_freezes_nothing(bench, table1, tmp_path, capsys, found, message):
    out = tmp_path / "t1"
    assert bench.main(["table1", "--found", found, "--out", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    # a real run fails the same way before it trains or freezes anything (the other found models resolve fine)
    args = bench.parser().parse_args(["table1", "--found", found, "--out", str(out)])
    args.argv = []
    with pytest.raises(ValueError, match=message):
        table1.cmd_table1(args, runner=lambda argv: pytest.fail("trained despite a bad --found"))
    assert not out.exists()


def test_found_models_default_to_the_surrogate_searches_bests(bench, table1, space, tmp_path):
    # each found model is its own search's best: soft at 75, hard at 75, hard at 23 (decoded from its indices)
    import random

    archs = {key: space.sample_indices(random.Random(seed))
             for seed, key in enumerate([("75", "soft"), ("75", "hard"), ("23", "hard")])}
    surrogate = tmp_path / "surrogate.json"
    surrogate.write_text(json.dumps({"found": {"75": {"soft": {"indices": archs[("75", "soft")]},
                                                      "hard": {"indices": archs[("75", "hard")]}},
                                               "23": {"hard": {"indices": archs[("23", "hard")]}}}}))
    out = str(tmp_path / "t1")
    args = bench.parser().parse_args(["table1", "--surrogate-json", str(surrogate), "--out", out,
                                      "--found", "found-75-soft=mnasnet-small", "--dry-run"])
    models = table1.table1_models(args, freeze=False)
    assert not os.path.exists(out)                       # --dry-run plans without writing
    assert models["found-75-soft"]["arch"] == load_architecture("mnasnet-small")
    models = table1.table1_models(args)
    assert load_architecture(models["found-75-soft"]["spec"]) == load_architecture("mnasnet-small")
    for name, key in (("found-75-hard", ("75", "hard")), ("found-23-hard", ("23", "hard"))):
        assert load_architecture(models[name]["spec"]) == space.decode(archs[key]), name
        assert table1.frozen_source(models[name]["spec"]).startswith(f"the best hard child at T = {key[0]} ms")


def test_the_report_has_one_place_for_each_section_and_the_readme_links_it(bench):
    root = os.path.dirname(bench.REPRODUCTION_MD)
    text = open(bench.REPRODUCTION_MD, encoding="utf-8").read()
    for tag in ("reproduction-real", "reproduction-surrogate", "reproduction-table1"):
        assert text.count(f"<!-- {tag} -->") == text.count(f"<!-- /{tag} -->") == 1, tag
    assert "(REPRODUCTION.md)" in open(os.path.join(root, "README.md"), encoding="utf-8").read()


# -- real runs: a run folder and its committed export give the same report
def test_real_reads_a_run_folder_and_its_export_alike(bench, space, tmp_path, capsys):
    import random

    from mnas.results.store import ResultStore

    config = {"name": "t", "space": "mnasnet", "strategy": "mnas", "samples": 12, "workers": 2,
              "reward": {"preset": "hard", "target_ms": 75}, "proxy": {"threads": 1}}
    rng = random.Random(3)
    run = tmp_path / "run"
    with ResultStore(run) as store:
        store.set_meta("config", config)
        for i in range(12):
            indices = space.sample_indices(rng)
            latency = 40.0 + 3 * i
            store.add_child({"trial_id": f"c{i}", "sample": i, "strategy": "mnas", "status": "ok",
                             "arch": str(space.decode(indices)), "indices": indices,
                             "accuracy": 0.8 + i / 100, "latency_ms": latency, "latency_source": "pixel1",
                             "reward": 0.8 + i / 100 if latency <= 75 else 0.0, "params": 1000 + i,
                             "madds": 5000 + i, "train_seconds": 30.0, "eval_seconds": 1.0,
                             "started_at": f"2026-12-03T10:{i:02d}:00+00:00",
                             "finished_at": f"2026-12-03T10:{i + 1:02d}:00+00:00",
                             "extra": {"cpu_seconds": 40.0 + i}})
        store.export(tmp_path / "run.csv")
    reports = {}
    for source in (run, tmp_path / "run.csv"):
        out = tmp_path / f"{source.name}.json"
        if source.suffix == ".csv":    # without its config the export is refused in one line, nothing written
            assert bench.main(["real", str(source), "--json", str(out), "--no-plot"]) == 2
            assert "run.config.json" in capsys.readouterr().err and not out.exists()
            (tmp_path / "run.config.json").write_text(json.dumps(config))
        assert bench.main(["real", str(source), "--json", str(out), "--no-plot"]) == 0
        reports[source.suffix] = json.loads(out.read_text())["runs"][0]
    folder, export = reports[""], reports[".csv"]
    assert folder["preset"] == "hard" and folder["statuses"]["ok"] == 12
    assert folder["late_ms"] == [67.0, 70.0, 73.0]          # the last quarter, by sample
    assert folder["cost"]["cpu_hours"] == pytest.approx(sum(40.0 + i for i in range(12)) / 3600)
    assert folder["top"][0]["indices"] == export["top"][0]["indices"]
    for key in ("preset", "target", "statuses", "late_ms", "tail", "top", "cost", "architecture"):
        assert export[key] == folder[key], key


def test_real_refuses_a_missing_run_in_one_line(bench, tmp_path, capsys):
    assert bench.main(["real", str(tmp_path / "nowhere"), "--json", str(tmp_path / "r.json"), "--no-plot"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such run folder or export" in err and not (tmp_path / "r.json").exists()
