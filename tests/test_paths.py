"""Root-folder precedence: CLI flag > MEDMAMBA_* > nnUNet_* > ./medmamba_data."""
from pathlib import Path

import pytest

from medmamba.paths import ROOT_KINDS, resolve_root


@pytest.mark.parametrize("kind", ROOT_KINDS)
def test_precedence(kind, tmp_path):
    env = {
        f"MEDMAMBA_{kind.upper()}": str(tmp_path / "mm"),
        f"nnUNet_{kind}": str(tmp_path / "nn"),
    }
    r = resolve_root(kind, str(tmp_path / "cli"), environ=env, cwd=tmp_path)
    assert r.path == tmp_path / "cli" and r.source == f"--{kind}"
    r = resolve_root(kind, None, environ=env, cwd=tmp_path)
    assert r.path == tmp_path / "mm" and r.source == f"$MEDMAMBA_{kind.upper()}"
    del env[f"MEDMAMBA_{kind.upper()}"]
    r = resolve_root(kind, None, environ=env, cwd=tmp_path)
    assert r.path == tmp_path / "nn" and r.source == f"$nnUNet_{kind}"
    r = resolve_root(kind, None, environ={}, cwd=tmp_path)
    assert r.path == tmp_path / "medmamba_data" / kind
    assert "default" in r.source
    assert str(r.path) in r.describe()


def test_empty_variable_is_ignored(tmp_path):
    r = resolve_root("raw", None, environ={"MEDMAMBA_RAW": "", "nnUNet_raw": str(tmp_path)}, cwd=tmp_path)
    assert r.path == Path(tmp_path)


def test_choice_is_logged(tmp_path, caplog):
    with caplog.at_level("INFO", logger="medmamba.paths"):
        resolve_root("results", None, environ={"MEDMAMBA_RESULTS": str(tmp_path)})
    assert "$MEDMAMBA_RESULTS" in caplog.text


def test_unknown_kind():
    with pytest.raises(ValueError):
        resolve_root("weights")
