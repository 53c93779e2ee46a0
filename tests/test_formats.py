"""The file-contract layer: atomic writes, the one JSON reader, the device resolver, readers' errors."""
from __future__ import annotations

import os
import stat
import threading

import numpy as np
import pytest
import torch

from medmamba.atomic import atomic_path, atomic_write_json, atomic_write_text
from medmamba.devices import resolve_device
from medmamba.errors import ConfigurationError, DatasetError, FileFormatError, PlansError
from medmamba.formats.json_io import read_json
from medmamba.formats.preprocessed_case import (
    load_preprocessed_case, load_training_cases, save_preprocessed_case,
)
from medmamba.formats.splits import read_splits
from medmamba.formats.summary import load_summary, write_summary


def test_atomic_write_gets_the_permissions_of_a_plain_open(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        (tmp_path / "b.txt").write_text("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o640


def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "keep.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]


def test_atomic_writes_from_many_threads_do_not_interfere(tmp_path):
    def write(i: int) -> None:
        for k in range(20):
            atomic_write_json(tmp_path / f"f{i % 4}.json", {"writer": i, "k": k})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"f{i}.json" for i in range(4)]
    for i in range(4):
        assert read_json(tmp_path / f"f{i}.json")["writer"] % 4 == i


@pytest.mark.parametrize("content,expect,problem", [
    (None, dict, "plans file not found; run it first"),
    ("{not json", dict, "invalid JSON in plans file"),
    ("[1, 2]", dict, "plans file must hold a JSON object at the top level, not list"),
    ('{"a": 1}', list, "plans file must hold a JSON list at the top level, not dict"),
    (b"\xff\xfe\x00", dict, "cannot read plans file"),
])
def test_read_json_names_the_file_and_the_problem_in_one_line(tmp_path, content, expect, problem):
    path = tmp_path / "plans.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(PlansError) as info:
        read_json(path, expect, "plans", PlansError, "run it first")
    message = str(info.value)
    assert message.startswith(f"{path}: {problem}") and "\n" not in message


def test_read_json_default_error_and_any_type(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("3")
    assert read_json(path, None) == 3
    with pytest.raises(FileFormatError):
        read_json(path)


def test_splits_reader_rejects_wrong_shapes(tmp_path):
    path = tmp_path / "splits.json"
    path.write_text('[{"train": ["a"], "val": ["b"]}]')
    assert read_splits(path) == [{"train": ["a"], "val": ["b"]}]
    for bad in ('[]', '[{"train": ["a"]}]', '[{"train": "a", "val": []}]', '{"train": []}'):
        path.write_text(bad)
        with pytest.raises(DatasetError):
            read_splits(path, DatasetError)


def test_summary_round_trip_turns_null_back_into_nan(tmp_path):
    path = tmp_path / "summary.json"
    write_summary(path, {"metric_per_case": [{"case": "a", "prediction_file": None, "metrics": {"1": {"Dice": float("nan")}}}],
                         "mean": {}, "foreground_mean": {"Dice": float("nan")}})
    assert '"Dice": null' in path.read_text()
    summary = load_summary(path)
    assert np.isnan(summary["foreground_mean"]["Dice"])
    assert summary["metric_per_case"][0]["prediction_file"] is None


def test_preprocessed_case_round_trip_and_training_index(tmp_path):
    data = np.random.default_rng(0).normal(size=(2, 4, 5, 6)).astype(np.float32)
    seg = np.zeros((1, 4, 5, 6), np.int16)
    seg[0, 1, 2, 3] = 2
    save_preprocessed_case(tmp_path, "c1", data, seg, {"class_locations": {"2": [[0, 1, 2, 3]]}})
    d, s, props = load_preprocessed_case(tmp_path, "c1")
    np.testing.assert_array_equal(d, data)
    np.testing.assert_array_equal(s, seg)
    case = load_training_cases(tmp_path)["c1"]
    np.testing.assert_array_equal(case.class_locations[2], [[1, 2, 3]])  # channel index dropped
    (tmp_path / "c1.json").write_text("{")
    with pytest.raises(PlansError, match="invalid JSON in case properties"):
        load_preprocessed_case(tmp_path, "c1")


def test_one_device_resolver():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "cuda:-1", ""):
        with pytest.raises(ConfigurationError):
            resolve_device(bad)
    if torch.cuda.is_available():
        assert resolve_device("cuda:0") == torch.device("cuda:0")
        with pytest.raises(ConfigurationError, match="sees only"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        for name in ("cuda", "cuda:0", "cuda:1"):
            with pytest.raises(ConfigurationError, match="no CUDA device"):
                resolve_device(name)


def test_model_folder_names_round_trip_and_spell_twins_portably(tmp_path):
    from medmamba.formats.model_folder_name import model_folder_name, model_folders, parse_model_folder_name

    name = model_folder_name("vmunet:gated_cnn", "medmambaPlans", "3d_fullres")
    assert name == "vmunet+gated_cnn__medmambaPlans__3d_fullres" and ":" not in name
    assert parse_model_folder_name(name) == ("vmunet:gated_cnn", "medmambaPlans", "3d_fullres")
    assert parse_model_folder_name("vmunet:no_ssm__p__2d") == ("vmunet:no_ssm", "p", "2d")  # an older spelling
    for not_a_model in ("fold_0", "a__b", "a__b__c__d", "__b__c"):
        assert parse_model_folder_name(not_a_model) is None
    for folder in ("plain_unet__p__2d", "fold_0", "x__y"):
        (tmp_path / folder).mkdir()
    (tmp_path / "a__b__c").write_text("a file, not a folder")
    assert [p.name for p in model_folders(tmp_path)] == ["plain_unet__p__2d"]
