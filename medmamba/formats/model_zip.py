"""The model zip (``medmamba export_model``): one trained model, verified end to end when read.

Layout inside the zip::

    medmamba_model.json                      manifest (this module)
    <DatasetXXX_Name>/<network>__<plans>__<configuration>/
        plans.json  dataset.json  MODEL_CARD.md
        fold_<k>/checkpoint_<kind>.pt        the training checkpoint without its training state
        fold_<k>/training_log.json           per-epoch log, when training wrote one
        fold_<k>/validation/summary.json     fold validation metrics, when present

The manifest names the package format version, the oldest medmamba that reads it and, under
``"entries"``, every other entry of the zip with its size in bytes and sha256. A reader
(:func:`read_package`) refuses, before extracting anything:

- an entry the manifest does not list, or a listed entry that is missing or of another size;
- a compression bomb: more than :data:`MAX_TOTAL_BYTES` uncompressed in all, or an entry larger than
  :data:`BOMB_MIN_BYTES` that inflates more than :data:`MAX_RATIO` times;
- absolute paths, ``..``, links and names outside the model folder;
- a zip whose own sha256 differs from a pinned one (``--sha256``, as pip's hash-checking mode).

Extraction hashes every entry as it is written and refuses a mismatch (the file is removed).
Checkpoints inside are read with ``torch.load(weights_only=True)`` (:mod:`medmamba.formats.checkpoint`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from medmamba.errors import CheckpointError, FileFormatError
from medmamba.formats.json_io import loads_json
from medmamba.atomic import json_safe

MODEL_PACKAGE_FORMAT_VERSION = 2
# The oldest medmamba that reads the packages this one writes.
MIN_READER_VERSION = "0.1.0"
MANIFEST_NAME = "medmamba_model.json"
# Keys every manifest holds.
MANIFEST_KEYS = ("format_version", "min_medmamba_version", "medmamba_version", "dataset_name", "model_folder",
                 "configuration", "network", "folds", "checkpoint", "created", "entries")
# Bomb limits. A model zip holds checkpoints (float weights: deflate gains ~1.1x) and small JSON/markdown
# files (~5-20x); 5 folds of the largest registry network stay well under 8 GiB.
MAX_TOTAL_BYTES = 32 << 30
MAX_RATIO = 200
BOMB_MIN_BYTES = 16 << 20
MAX_MANIFEST_BYTES = 4 << 20
_CHUNK = 1 << 20


def json_bytes(obj: Any) -> bytes:
    """A JSON file's bytes for a zip entry (plans.json, dataset.json)."""

    return json.dumps(json_safe(obj), indent=2).encode("utf-8")


def entry_record(data: bytes) -> dict[str, Any]:
    """The manifest's record of one entry."""
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"manifest lacks keys {missing}")
    return json.dumps(manifest, indent=2).encode("utf-8")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_pinned_hash(path: str | os.PathLike, sha256: str | None) -> None:
    """Refuse ``path`` unless its sha256 is ``sha256`` (when given)."""
    if sha256 is None:
        return
    wanted = sha256.strip().lower()
    if len(wanted) != 64 or any(c not in "0123456789abcdef" for c in wanted):
        raise FileFormatError(f"--sha256 must be 64 hexadecimal digits, got {sha256!r}", path=path)
    got = file_sha256(path)
    if got != wanted:
        raise FileFormatError(f"sha256 is {got}, not the pinned {wanted}; refusing this file", path=path)


def parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    """The manifest read from the zip (``where`` names the zip in errors)."""
    manifest = loads_json(data, where, what=MANIFEST_NAME)
    if not isinstance(manifest, dict):
        raise FileFormatError(f"{MANIFEST_NAME} must hold a JSON object", path=where)
    if isinstance(manifest.get("format_version"), int) and manifest["format_version"] < 2:
        raise FileFormatError(f"package format {manifest['format_version']} lists no entry hashes, so it cannot be "
                              "verified; export it again with this medmamba (`medmamba export_model`)", path=where)
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise FileFormatError(f"{MANIFEST_NAME} lacks {', '.join(missing)}", path=where)
    entries = manifest["entries"]
    if not isinstance(entries, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("size"), int) and not isinstance(v.get("size"), bool)
            and v["size"] >= 0 and isinstance(v.get("sha256"), str) and len(v["sha256"]) == 64 for v in entries.values()):
        raise FileFormatError(f"{MANIFEST_NAME}: entries must map each file to its size and sha256", path=where)
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


def _check_sizes(infos: list[zipfile.ZipInfo], where: Path) -> None:
    """Refuse a compression bomb from the zip's directory, before anything is inflated."""
    total = sum(i.file_size for i in infos)
    if total > MAX_TOTAL_BYTES:
        raise FileFormatError(f"entries inflate to {total / 2**30:.1f} GiB, above the {MAX_TOTAL_BYTES >> 30} GiB "
                              "limit for a model zip; refusing to extract", path=where)
    for info in infos:
        if info.file_size > BOMB_MIN_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise FileFormatError(f"zip entry {info.filename!r} inflates {info.file_size / max(info.compress_size, 1):.0f}"
                                  f" times ({info.compress_size} -> {info.file_size} bytes), a compression bomb; "
                                  "refusing to extract", path=where)


def _check_entries(zf: zipfile.ZipFile, manifest: dict[str, Any], where: Path) -> None:
    listed = manifest["entries"]
    seen: set[str] = set()
    for info in zf.infolist():
        if info.filename == MANIFEST_NAME or info.is_dir():
            continue
        if info.filename in seen:
            raise FileFormatError(f"zip entry {info.filename!r} appears twice; refusing to install", path=where)
        seen.add(info.filename)
        record = listed.get(info.filename)
        if record is None:
            raise FileFormatError(f"zip entry {info.filename!r} is not listed in {MANIFEST_NAME}; refusing to install",
                                  path=where)
        if info.file_size != record["size"]:
            raise FileFormatError(f"zip entry {info.filename!r} is {info.file_size} bytes, the manifest says "
                                  f"{record['size']}; refusing to install", path=where)
    absent = sorted(set(listed) - seen)
    if absent:
        raise FileFormatError(f"{MANIFEST_NAME} lists {absent[0]!r}, which the zip lacks", path=where)


def read_package(path: str | os.PathLike, reader_version: str,
                 sha256: str | None = None) -> tuple[zipfile.ZipFile, dict[str, Any]]:
    """Open and check a model zip: pinned hash, bomb limits, manifest, medmamba version, entry names and
    sizes against the manifest. ``reader_version`` is the running medmamba's version. Returns the open zip
    and its manifest; every problem is one :class:`FileFormatError` line. Hashes are checked on extraction."""
    where = Path(path)
    if not where.is_file():
        raise FileFormatError("model file not found", path=where)
    check_pinned_hash(where, sha256)
    try:
        zf = zipfile.ZipFile(where)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise FileFormatError(f"not a readable zip file, maybe truncated ({err})", path=where) from None
    try:
        infos = zf.infolist()
        _check_sizes(infos, where)
        manifest_info = next((i for i in infos if i.filename == MANIFEST_NAME), None)
        if manifest_info is None:
            raise FileFormatError(f"no {MANIFEST_NAME}: not a medmamba model package (export_model writes one)",
                                  path=where)
        if manifest_info.file_size > MAX_MANIFEST_BYTES:
            raise FileFormatError(f"{MANIFEST_NAME} is {manifest_info.file_size} bytes; refusing a manifest above "
                                  f"{MAX_MANIFEST_BYTES >> 20} MiB", path=where)
        try:
            data = zf.read(MANIFEST_NAME)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
            raise FileFormatError(f"corrupt zip file, maybe truncated ({err})", path=where) from None
        manifest = parse_manifest(data, str(where))
        needed = str(manifest["min_medmamba_version"])
        if version_tuple(needed) > version_tuple(reader_version):
            raise FileFormatError(f"needs medmamba >= {needed} (this is {reader_version}); upgrade medmamba",
                                  path=where)
        if not isinstance(manifest["format_version"], int) or manifest["format_version"] > MODEL_PACKAGE_FORMAT_VERSION:
            raise FileFormatError(f"package format {manifest['format_version']!r} is newer than this medmamba "
                                  f"reads ({MODEL_PACKAGE_FORMAT_VERSION}); upgrade medmamba", path=where)
        for part in (manifest["dataset_name"], manifest["model_folder"]):
            if not isinstance(part, str) or not part or part in (".", "..") or "/" in part or "\\" in part:
                raise FileFormatError(f"manifest names an invalid folder {part!r}", path=where)
        prefix = f"{manifest['dataset_name']}/{manifest['model_folder']}"
        for info in infos:
            _safe_member(info, prefix, where)
        _check_entries(zf, manifest, where)
    except BaseException:
        zf.close()
        raise
    return zf, manifest


def extract_package(zf: zipfile.ZipFile, manifest: dict[str, Any], into: Path) -> Path:
    """Extract every listed entry into ``into``, hashing as it goes; a mismatch removes the file and refuses."""
    where = Path(zf.filename or "model zip")
    prefix = f"{manifest['dataset_name']}/{manifest['model_folder']}"
    for info in zf.infolist():
        if info.filename == MANIFEST_NAME or info.is_dir():
            continue
        record = manifest["entries"][info.filename]
        target = into / info.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        try:
            with zf.open(info) as src, open(target, "wb") as dst:
                for block in iter(lambda: src.read(_CHUNK), b""):
                    size += len(block)
                    if size > record["size"]:
                        break
                    digest.update(block)
                    dst.write(block)
        except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as err:
            target.unlink(missing_ok=True)
            raise FileFormatError(f"corrupt zip entry {info.filename!r} ({err})", path=where) from None
        if size != record["size"] or digest.hexdigest() != record["sha256"]:
            target.unlink(missing_ok=True)
            raise FileFormatError(f"zip entry {info.filename!r} does not match its sha256 in {MANIFEST_NAME}; "
                                  "refusing to install", path=where)
    return into / prefix


@contextlib.contextmanager
def open_model(path: str | os.PathLike, reader_version: str, sha256: str | None = None) -> Iterator[Path]:
    """A model folder for ``path``: a model folder as is, or a model zip verified and extracted into a
    temporary folder that is removed when the block ends (load what you need inside it). ``sha256`` pins
    the zip's hash (a folder cannot be pinned)."""
    p = Path(path)
    if p.is_dir():
        if sha256 is not None:
            raise FileFormatError("--sha256 pins a model zip, and this is a folder", path=p)
        if not any(p.glob("fold_*")):
            raise CheckpointError("not a model folder (no fold_* folders): give "
                                  "<results>/<Dataset>/<network>__<plans>__<configuration> or a model zip", path=p)
        yield p
        return
    if not p.exists():
        raise CheckpointError("model not found (give a model folder or a zip from `medmamba export_model`)", path=p)
    zf, manifest = read_package(p, reader_version, sha256)
    with zf, tempfile.TemporaryDirectory(prefix="medmamba_model_") as tmp:
        yield extract_package(zf, manifest, Path(tmp))
