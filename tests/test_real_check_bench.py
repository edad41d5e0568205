"""The pure parts of benchmarks/real_check.py (issue 17, part 4): reading both searches, scoring the random one
with the same reward, the top-10 of distinct architectures, the resampled reference, and the table."""


import numpy as np
import pytest

from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("real_check")


def test_top_mean_counts_a_repeated_architecture_once_at_its_mean(bench):
    children = [((0,), 0.9), ((0,), 0.7), ((1,), 0.6), ((2,), 0.5)]
    assert bench.top_mean(children, k=2) == pytest.approx((0.8 + 0.6) / 2)
    assert bench.top_mean(children, k=10) == pytest.approx((0.8 + 0.6 + 0.5) / 3)


def test_stats_at_are_prefixes_in_order(bench):
    children = [((i,), v) for i, v in enumerate([0.1, 0.5, 0.3, 0.9, 0.2])]
    stats = bench.stats_at(children, [2, 4, 9])
    assert set(stats) == {2, 4}                       # no mark past the children there are
    assert stats[2]["best"] == 0.5 and stats[4]["best"] == 0.9


def test_resampled_draws_without_replacement(bench):
    children = [((i,), float(i)) for i in range(20)]
    out = bench.resampled(children, [5, 20], draws=200)
    assert out[20]["best"] == 19.0 and out[20]["best_band"] == (19.0, 19.0)     # all of them: always the max
    assert out[20]["top"] == pytest.approx(np.mean(range(10, 20)))
    assert 4.0 <= out[5]["best_band"][0] <= out[5]["best"] <= out[5]["best_band"][1] <= 19.0


def _genotypes(n):
    import random

    from mnas.search.registry import load_space

    rng = random.Random(0)
    space = load_space("mnasnet")
    return [tuple(space.sample_indices(rng)) for _ in range(n)]


G = _genotypes(8)


def _tables(tmp_path):
    def cell(g):
        return '"' + str(list(g)) + '"'

    mnas = tmp_path / "mnas.csv"
    mnas.write_text("sample,indices,accuracy,latency_ms,reward,status\n"
                    f"1,{cell(G[0])},0.80,40.0,0.80,ok\n0,{cell(G[1])},0.70,60.0,0.70,ok\n"
                    f"2,{cell(G[2])},,,,failed\n3,{cell(G[3])},0.90,20.0,0.90,ok\n")
    bench_csv = tmp_path / "bench.csv"
    bench_csv.write_text("run,sample,indices,accuracy,latency_pixel1_ms,status\n"
                         f"second,0,{cell(G[4])},0.9,75.0,ok\n"
                         f"first,1,{cell(G[5])},0.8,150.0,ok\n"
                         f"first,0,{cell(G[6])},0.7,37.5,ok\n"
                         f"second,1,{cell(G[7])},,,failed\n")
    return mnas, bench_csv


def test_both_searches_are_read_in_their_order_and_scored_alike(bench, tmp_path):
    mnas, bench_csv = _tables(tmp_path)
    children = bench.mnas_children(bench.read_search(str(mnas)))
    assert [v for _, v in children] == [0.70, 0.80, 0.0, 0.90]        # by sample; a failed child scores 0
    assert children[0][0] == G[1]
    rnd = bench.random_children(bench.read_bench(str(bench_csv)))
    # runs in the order the table first lists them ('second' first), each by sample
    assert [g for g, _ in rnd] == [G[4], G[7], G[6], G[5]]
    assert rnd[0][1] == pytest.approx(0.9)                            # at T: the accuracy
    assert rnd[1][1] == 0.0
    assert rnd[2][1] == pytest.approx(0.7 * 0.5 ** -0.07)             # soft: a = b = -0.07
    assert rnd[3][1] == pytest.approx(0.8 * 2.0 ** -0.07)


def test_command_prints_the_tables_without_touching_benchmarks(bench, tmp_path, capsys):
    mnas, bench_csv = _tables(tmp_path)
    assert bench.main(["--mnas", str(mnas), "--random", str(bench_csv), "--budget", "4", "--seeds", "0",
                       "--no-plot"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| 4 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "0.9000" and cells[2] == "0.9000"              # mnas best; random's first 4: its best
    assert "surrogate predicted" not in out
    # what the search moved: its trained children (first and last 50 = all 3 here) beside the collection's 3
    moved = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| mnas, ")
             or line.startswith("| random (")}
    assert "| 3 | 40.0 | 0.8000 |" in moved["mnas, first 50"]
    assert "| 3 | 75.0 | 0.8000 |" in moved["random (MNAS-Bench)"]


def test_a_missing_table_is_one_line_and_status_2(bench, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--mnas", str(tmp_path / "none.csv"), "--seeds", "0"])
    assert exit_.value.code == 2
    assert "none.csv: no such file or folder" in capsys.readouterr().err


def test_the_surrogate_is_checked_on_the_searchs_own_children(bench, tmp_path):
    """Real accuracies made from the shipped surrogate's own predictions minus 0.01: rank correlation 1, and the
    surrogate 0.01 above them everywhere; a failed child is left out."""
    import os
    import random

    from mnas.search.registry import load_space
    from mnas.search.surrogate import Surrogate

    path = os.path.join(os.path.dirname(bench.DEFAULT_SURROGATE), "mnas_bench_surrogate.json")
    space = load_space("mnasnet")
    rng = random.Random(0)
    genotypes = [space.sample_indices(rng) for _ in range(12)]
    predicted = Surrogate.load(path).predict([space.decode(g) for g in genotypes])
    rows = ["sample,indices,accuracy,reward,status"]
    for sample, (g, p) in enumerate(zip(genotypes, predicted)):
        rows.append(f"{sample},\"{list(g)}\",{p - 0.01},0.5,ok")
    rows.append(f"12,\"{list(genotypes[0])}\",,,failed")
    table = tmp_path / "search.csv"
    table.write_text("\n".join(rows) + "\n")
    fit = bench.surrogate_on_search(bench.read_search(str(table)), path, top=3)
    assert fit["n"] == 12 and fit["top"] == 3
    assert fit["spearman"] == pytest.approx(1.0) and fit["kendall"] == pytest.approx(1.0)
    assert fit["bias"] == pytest.approx(0.01, abs=1e-9) and fit["bias_top"] == pytest.approx(0.01, abs=1e-9)
