"""The CLI: every subcommand's --help works, bad arguments and user errors are one line."""
import subprocess
import sys

import pytest

from medmamba.atomic import atomic_path, atomic_write_json
from medmamba.cli.main import COMMAND_MODULES, main
from medmamba.errors import DatasetError, MedmambaError


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medmamba", *args], capture_output=True, text=True, timeout=300)


def test_top_level_help():
    out = _run("--help")
    assert out.returncode == 0
    for name in COMMAND_MODULES:
        assert name in out.stdout


@pytest.mark.parametrize("command", COMMAND_MODULES)
def test_subcommand_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert "usage: medmamba" in capsys.readouterr().out


def test_bad_argument_is_one_line():
    out = _run("info", "--no-such-flag")
    assert out.returncode == 1  # the README promises exit status 1 for every error
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--no-such-flag" in lines[0]


def test_unknown_command_is_one_line():
    out = _run("frobnicate")
    assert out.returncode == 1  # the README promises exit status 1 for every error
    assert len(out.stderr.strip().splitlines()) == 1


def test_medmamba_error_is_one_line_exit_1(tmp_path, capsys):
    (tmp_path / "Dataset005_Prostate").mkdir()
    assert main(["verify", "-d", "7", "--raw", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("medmamba verify: error: ")
    assert str(tmp_path) in err and "Dataset005_Prostate" in err  # names the folder searched and what exists


def test_error_raised_by_the_api_is_printed_as_one_line(monkeypatch, capsys):
    from medmamba import api

    def boom(**_kwargs):
        raise DatasetError("label values {7} not declared in dataset.json", path="/data/labelsTr/case_001.nii.gz")

    monkeypatch.setattr(api, "verify", boom)  # the CLI command calls the public api function
    assert main(["verify", "-d", "5"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "medmamba verify: error: /data/labelsTr/case_001.nii.gz: label values {7} not declared in dataset.json"


def test_other_exceptions_are_one_line_saying_bug_with_the_traceback_in_a_file(monkeypatch, capsys, tmp_path):
    from medmamba import api

    def bug(**_kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(api, "verify", bug)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert main(["verify", "-d", "5"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "a bug in medmamba" in err and "ZeroDivisionError: a bug" in err
    written = err.rsplit("traceback written to ", 1)[1]
    assert written.startswith(str(tmp_path)) and "Traceback" in open(written).read()
    # with -v the traceback itself is printed
    assert main(["-v", "verify", "-d", "5"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_error_message_is_one_line():
    err = MedmambaError("bad\nthing   here", path="x.nii.gz")
    assert str(err) == "x.nii.gz: bad thing here"


def test_info_runs(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "scan backends" in out and "torch" in out


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    assert target.read_text().strip().startswith("{")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert '"a": 1' in target.read_text()  # the old file survives a failed write
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_write_uses_normal_permissions(tmp_path):
    import os

    target = tmp_path / "perm.json"
    atomic_write_json(target, {})
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_atomic_json_is_strict(tmp_path):
    import json
    import math

    target = tmp_path / "m.json"
    atomic_write_json(target, {"dice": math.nan, "hd": [1.0, math.inf], "ok": 0.5})
    assert json.loads(target.read_text()) == {"dice": None, "hd": [1.0, None], "ok": 0.5}


@pytest.mark.parametrize("network", ["umamba_enc", "plain_unet"])  # a linked record; no record
def test_catalog_show_registry_name_as_the_readme_says(network):
    """README: "Networks (`--network NAME`, see `medmamba catalog show NAME`)"."""
    out = _run("catalog", "show", network)
    assert out.returncode == 0, out.stderr
    assert f"--network {network}" in out.stdout and out.stderr == ""
