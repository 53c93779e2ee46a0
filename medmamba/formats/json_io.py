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


def read_json(path: str | os.PathLike, expect: type | None = dict, what: str = "JSON",
              error: type[MedmambaError] = FileFormatError, missing_hint: str = "") -> Any:
    """Parse the JSON file at ``path``.

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
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"cannot read {what} file ({type(err).__name__}: {err})", path=p) from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise error(f"invalid JSON in {what} file ({err})", path=p) from None
    except _DuplicateKey as err:
        raise error(f"invalid {what} file: {err}", path=p) from None
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
            values.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise error(f"line {number}: not valid JSON ({err.msg})", path=p) from None
    return values
