"""The model package (``medmamba export_model``): a zip holding one trained model.

Layout inside the zip::

    medmamba_model.json                      manifest (this module)
    <DatasetXXX_Name>/<network>__<plans>__<configuration>/
        plans.json  dataset.json  MODEL_CARD.md
        fold_<k>/checkpoint_<kind>.pt        inference keys of the training checkpoint
        fold_<k>/training_log.json           per-epoch log, when training wrote one
        fold_<k>/validation/summary.json     fold validation metrics, when present

The manifest names the package format version and the oldest medmamba that reads it.
"""
from __future__ import annotations

import json
from typing import Any

import contextlib
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterator

from medmamba.errors import CheckpointError, FileFormatError

MODEL_PACKAGE_FORMAT_VERSION = 1
# The oldest medmamba that reads the packages this one writes.
MIN_READER_VERSION = "0.1.0"
MANIFEST_NAME = "medmamba_model.json"
# Keys every manifest holds.
MANIFEST_KEYS = ("format_version", "min_medmamba_version", "medmamba_version", "dataset_name", "model_folder",
                 "configuration", "network", "folds", "checkpoint", "created")


def json_bytes(obj: Any) -> bytes:
    """A JSON file's bytes for a zip entry (plans.json, dataset.json)."""
    from medmamba.atomic import json_safe

    return json.dumps(json_safe(obj), indent=2).encode("utf-8")


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"manifest lacks keys {missing}")
    return json.dumps(manifest, indent=2).encode("utf-8")


def parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    """The manifest read from the zip (``where`` names the zip in errors)."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FileFormatError(f"{MANIFEST_NAME} is not valid JSON ({err})", path=where) from None
    if not isinstance(manifest, dict):
        raise FileFormatError(f"{MANIFEST_NAME} must hold a JSON object", path=where)
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise FileFormatError(f"{MANIFEST_NAME} lacks {', '.join(missing)}", path=where)
    return manifest


def version_tuple(version: str) -> tuple[int, ...]:
    """``"0.1.0"`` → ``(0, 1, 0)``; a suffix such as ``.dev1`` or ``rc1`` after the numbers is ignored."""
    parts = []
    for piece in str(version).split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _safe_member(info: zipfile.ZipInfo, prefix: str, where: Path) -> None:
    name = info.filename
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or (path.parts and ":" in path.parts[0]):
        raise FileFormatError(f"zip entry {name!r} is an absolute path; refusing to install", path=where)
    if ".." in path.parts or "\\" in name:
        raise FileFormatError(f"zip entry {name!r} points outside the model folder; refusing to install",
                              path=where)
    if stat.S_ISLNK(info.external_attr >> 16):
        raise FileFormatError(f"zip entry {name!r} is a symbolic link; refusing to install", path=where)
    if name != MANIFEST_NAME and not (name == prefix + "/" or name.startswith(prefix + "/")):
        raise FileFormatError(f"zip entry {name!r} is outside {prefix}/; refusing to install", path=where)


def read_package(path: str | os.PathLike, reader_version: str) -> tuple[zipfile.ZipFile, dict[str, Any]]:
    """Open and check a model zip: integrity (every CRC), manifest, medmamba version, entry names.
    ``reader_version`` is the running medmamba's version. Returns the open zip and its manifest; every
    problem is one :class:`FileFormatError` line."""
    where = Path(path)
    if not where.is_file():
        raise FileFormatError("model file not found", path=where)
    try:
        zf = zipfile.ZipFile(where)
    except (zipfile.BadZipFile, OSError) as err:
        raise FileFormatError(f"not a readable zip file, maybe truncated ({err})", path=where) from None
    try:
        try:
            bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            raise FileFormatError(f"corrupt zip file, maybe truncated ({err})", path=where) from None
        if bad is not None:
            raise FileFormatError(f"corrupt zip entry {bad!r} (checksum mismatch)", path=where)
        if MANIFEST_NAME not in zf.namelist():
            raise FileFormatError(f"no {MANIFEST_NAME}: not a medmamba model package (export_model writes one)",
                                  path=where)
        manifest = parse_manifest(zf.read(MANIFEST_NAME), str(where))
        needed = str(manifest["min_medmamba_version"])
        if version_tuple(needed) > version_tuple(reader_version):
            raise FileFormatError(f"needs medmamba >= {needed} (this is {reader_version}); upgrade medmamba",
                                  path=where)
        if int(manifest["format_version"]) > MODEL_PACKAGE_FORMAT_VERSION:
            raise FileFormatError(f"package format {manifest['format_version']} is newer than this medmamba "
                                  f"reads ({MODEL_PACKAGE_FORMAT_VERSION}); upgrade medmamba", path=where)
        prefix = f"{manifest['dataset_name']}/{manifest['model_folder']}"
        for part in (str(manifest["dataset_name"]), str(manifest["model_folder"])):
            if not part or part in (".", "..") or "/" in part or "\\" in part:
                raise FileFormatError(f"manifest names an invalid folder {part!r}", path=where)
        for info in zf.infolist():
            _safe_member(info, prefix, where)
    except BaseException:
        zf.close()
        raise
    return zf, manifest


def extract_package(zf: zipfile.ZipFile, manifest: dict[str, Any], into: Path) -> Path:
    prefix = f"{manifest['dataset_name']}/{manifest['model_folder']}"
    for info in zf.infolist():
        if info.filename == MANIFEST_NAME or info.is_dir():
            continue
        target = into / info.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return into / prefix


@contextlib.contextmanager
def open_model(path: str | os.PathLike, reader_version: str) -> Iterator[Path]:
    """A model folder for ``path``: a model folder as is, or a model zip checked and extracted into a
    temporary folder that is removed when the block ends (load what you need inside it)."""
    p = Path(path)
    if p.is_dir():
        if not any(p.glob("fold_*")):
            raise CheckpointError("not a model folder (no fold_* folders): give "
                                  "<results>/<Dataset>/<network>__<plans>__<configuration> or a model zip", path=p)
        yield p
        return
    if not p.exists():
        raise CheckpointError("model not found (give a model folder or a zip from `medmamba export_model`)", path=p)
    zf, manifest = read_package(p, reader_version)
    with zf, tempfile.TemporaryDirectory(prefix="medmamba_model_") as tmp:
        yield extract_package(zf, manifest, Path(tmp))
