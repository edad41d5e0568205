"""`launch.py describe`: the table, the JSON, and one-line errors with exit status 2."""

import json
import os
import subprocess
import sys

import pytest

from mnas import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*argv):
    return subprocess.run([sys.executable, "launch.py", *argv], capture_output=True, text=True,
                          cwd=ROOT)


def test_describe_a1_json(capsys):
    assert cli.main(["describe", "mnasnet-a1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == 3_887_038 and isinstance(data["madds"], int)
    assert abs(data["madds"] / 312e6 - 1) < 0.01
    assert data["blocks"][0] == "r1_k3_s11_e1_i32_o16_noskip"
    assert data["resolution"] == 224 and data["depth_multiplier"] == 1.0


def test_describe_table_and_scaling(capsys):
    assert cli.main(["describe", "mnasnet-a1", "--resolution", "96", "--depth-multiplier", "0.35"]) == 0
    out = capsys.readouterr().out
    assert "96x96x3" in out and "1.75M" in out
    assert "b7.1" in out and "classifier" in out


def test_describe_file(tmp_path, capsys):
    path = tmp_path / "small.txt"
    path.write_text("stem: 8\n" + "\n".join(__import__("mnas.search.registry", fromlist=["x"]).ARCHITECTURES[
        "mnasnet-small"].block_strings))
    assert cli.main(["describe", str(path), "--json"]) == 0
    assert abs(json.loads(capsys.readouterr().out)["madds"] / 68e6 - 1) < 0.03


@pytest.mark.parametrize("argv, needle", [
    (["describe", "mnasnet-q"], "unknown architecture 'mnasnet-q'"),
    (["describe", "r1_k3_s11_e1_i32_o16_bogus7"], "'bogus7'"),
    (["describe", "mnasnet-a1", "--depth-multiplier", "-1"], "--depth-multiplier must be positive"),
    (["describe", "mnasnet-a1", "--resolution", "abc"], "invalid int value"),
])
def test_bad_input_is_one_line_and_status_2(argv, needle):
    result = run(*argv)
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_describe_does_not_import_tensorflow():
    code = ("import sys; from mnas import cli; cli.main(['describe', 'mnasnet-small', '--json']);"
            "sys.stderr.write(str('tensorflow' in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.stderr.strip().endswith("False")
