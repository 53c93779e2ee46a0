"""The README's Layout section names every package of medmamba and every module at its root."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _layout_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Layout\n\n```\n(.*?)^```", text, flags=re.S | re.M)
    assert match, "README.md has no '## Layout' code block"
    return match.group(1)


def test_layout_names_every_package_and_root_module():
    block = _layout_block()
    package = ROOT / "medmamba"
    subpackages = sorted(p.name for p in package.iterdir() if (p / "__init__.py").is_file())
    missing = [name for name in subpackages if f"medmamba/{name} " not in block]
    assert not missing, f"README Layout does not name medmamba/{missing}"
    modules = sorted(p.stem for p in package.glob("*.py") if not p.stem.startswith("__"))
    start = block.index("medmamba/*.py")
    root_entry = block[start:block.find("\nbenchmarks/", start)]
    assert not [m for m in modules if not re.search(rf"\b{m}\b", root_entry)], modules
    assert len(subpackages) >= 14 and "atomic" in modules  # the check sees the real tree
