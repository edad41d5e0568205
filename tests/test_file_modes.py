"""Files meant to be shared come out as readable as any file the user creates (the umask decides), not mkstemp's
0600: the results store, the report and the exports, each written through search/fileio.py's one atomic writer
(the store, which SQLite must build under its temporary name, takes its mode from the same umask)."""

from __future__ import annotations

import os
import stat

import pytest

from mnas.results.dashboard import write_report
from mnas.results.export import export_frame
from mnas.results.store import ResultStore

CHILD = {"trial_id": "t0", "sample": 0, "arch": "r1_k3_s11_e1_i32_o16", "status": "ok", "reward": 0.5,
         "accuracy": 0.5, "latency_ms": 10.0}


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_store_the_report_and_the_exports_follow_the_umask(tmp_path, umask):
    expected = 0o666 & ~umask
    with ResultStore(tmp_path / "run") as store:
        store.add_child(CHILD)
        frame = store.children()
    assert mode(tmp_path / "run" / "results.sqlite") == expected
    for name in ("children.csv", "children.parquet"):
        export_frame(frame, tmp_path / name)
        assert mode(tmp_path / name) == expected, name
    report = write_report([str(tmp_path / "run")], tmp_path / "report.html")
    assert mode(report) == expected
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # no temporary file left
