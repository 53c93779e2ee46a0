"""The one JSON file reader: a missing, unreadable or wrongly shaped file is a one-line error naming it."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medmamba.errors import FileFormatError, MedmambaError

_TYPE_NAMES = {dict: "a JSON object", list: "a JSON list"}


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object with a key twice is refused: ``json`` would keep the last silently (e.g. a label name
    declared twice in dataset.json would lose one of its values)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


# Limits for JSON from elsewhere: the largest nnU-Net dataset.json / plans.json seen are a few MB
# (file lists of thousands of cases) and about 10 levels deep.
MAX_JSON_BYTES = 256 << 20
MAX_JSON_DEPTH = 64


class _BadNumber(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise _BadNumber(f"number {text[:40]} is out of range")
    return value


def _refuse_constant(name: str) -> Any:
    raise _BadNumber(f"{name} is not a JSON number")


def _check_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse nesting deeper than ``limit`` (iteratively: deep values crash recursive readers later)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                raise _BadNumber(f"nested deeper than {limit} levels")
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))


def loads_json(text: str | bytes, where: str | os.PathLike | None, what: str = "JSON",
               error: type[MedmambaError] = FileFormatError) -> Any:
    """Parse JSON text from a file or zip entry named ``where``: invalid JSON, a key twice in one object,
    NaN/Infinity or a number out of float range, integers of more than 4300 digits, nesting deeper than
    :data:`MAX_JSON_DEPTH` and text above :data:`MAX_JSON_BYTES` are one ``error`` line."""
    if len(text) > MAX_JSON_BYTES:
        raise error(f"{what} file is {len(text) >> 20} MiB; refusing JSON above {MAX_JSON_BYTES >> 20} MiB",
                    path=where)
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        data = json.loads(text, object_pairs_hook=_unique_keys, parse_float=_finite_float,
                          parse_constant=_refuse_constant)
        _check_depth(data)
    except UnicodeDecodeError as err:
        raise error(f"cannot read {what} file ({type(err).__name__}: {err})", path=where) from None
    except json.JSONDecodeError as err:
        raise error(f"invalid JSON in {what} file ({err})", path=where) from None
    except (_DuplicateKey, _BadNumber) as err:
        raise error(f"invalid {what} file: {err}", path=where) from None
    except RecursionError:
        raise error(f"invalid {what} file: nested deeper than {MAX_JSON_DEPTH} levels", path=where) from None
    except ValueError as err:  # e.g. an integer beyond Python's int-string conversion limit
        raise error(f"invalid {what} file: {' '.join(str(err).split())[:200]}", path=where) from None
    return data


def read_json(path: str | os.PathLike, expect: type | None = dict, what: str = "JSON",
              error: type[MedmambaError] = FileFormatError, missing_hint: str = "") -> Any:
    """Parse the JSON file at ``path`` (with :func:`loads_json`'s limits).

    ``expect`` (``dict``, ``list`` or None for any) is the required top-level type; ``what`` names
    the file's role in messages ("plans", "splits", ...); ``error`` is the :class:`MedmambaError`
    subclass raised, always with the path, e.g. ``PlansError("<path>: invalid JSON in plans (...)")``;
    ``missing_hint`` tells the user how to create a missing file.
    """
    p = Path(path)
    if not p.is_file():
        hint = f"; {missing_hint}" if missing_hint else ""
        raise error(f"{what} file not found{hint}", path=p)
    try:
        if p.stat().st_size > MAX_JSON_BYTES:
            raise error(f"{what} file is {p.stat().st_size >> 20} MiB; refusing JSON above {MAX_JSON_BYTES >> 20} MiB",
                        path=p)
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"cannot read {what} file ({type(err).__name__}: {err})", path=p) from None
    data = loads_json(text, p, what, error)
    if expect is not None and not isinstance(data, expect):
        wanted = _TYPE_NAMES.get(expect, expect.__name__)
        raise error(f"{what} file must hold {wanted} at the top level, not {type(data).__name__}", path=p)
    return data


def read_json_lines(path: str | os.PathLike, what: str = "JSON Lines",
                    error: type[MedmambaError] = FileFormatError) -> list[tuple[int, Any]]:
    """Parse a JSON Lines file: ``(line number, value)`` for every non-blank line; an unreadable file
    or a line that is not JSON is one ``error`` naming the file and the line."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"cannot read {what} file ({type(err).__name__}: {err})", path=p) from None
    values = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            values.append((number, loads_json(line, p, what, error)))
        except MedmambaError as err:
            raise error(f"line {number}: {err.problem}", path=p) from None
    return values
