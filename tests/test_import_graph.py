"""Layering checks read from the source with ``ast``: no import cycles in medmamba (module-level and
function-level imports alike), and JSON files are parsed only in medmamba/formats."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "medmamba"

# Cycles that other areas of the code are removing; each entry is the set of modules in one strongly
# connected component. Delete an entry once its cycle is gone (the test then guards it for good).
KNOWN_MODULE_CYCLES: list[set[str]] = []
KNOWN_PACKAGE_CYCLES: list[set[str]] = []
# Modules that still parse JSON themselves (none: keep it that way).
JSON_PARSE_ALLOWED: set[str] = set()


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_package)
    return out


def _closest_module(name: str, modules) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the medmamba modules it imports anywhere in its body (``from pkg import sub`` counts
    as importing ``pkg.sub`` when that is a module, else ``pkg``)."""
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, (path, is_package) in modules.items():
        graph[name]
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    targets.append(full if full in modules else source)
            for target in targets:
                if target.split(".")[0] != "medmamba":
                    continue
                resolved = _closest_module(target, modules)
                if resolved and resolved != name:
                    graph[name].add(resolved)
    return graph


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for source, targets in graph.items():
        out[package_of(source)]
        for target in targets:
            if package_of(target) != package_of(source):
                out[package_of(source)].add(package_of(target))
    return out


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def _describe(component: set[str], graph: dict[str, set[str]]) -> str:
    edges = sorted(f"{a} -> {b}" for a in component for b in graph.get(a, ()) if b in component)
    return "{" + ", ".join(sorted(component)) + "}: " + "; ".join(edges)


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_function_level_imports():
    graph = import_graph()
    # medmamba/formats/checkpoint.py imports torch only inside functions; plans/fingerprint.py
    # reads cases through a function-level import of datasets.case_reader.
    assert "medmamba.datasets.case_reader" in graph["medmamba.plans.fingerprint"]


def test_no_import_cycles_between_modules():
    graph = import_graph()
    unexpected = [c for c in cycles(graph) if c not in KNOWN_MODULE_CYCLES]
    assert not unexpected, "import cycles:\n" + "\n".join(_describe(c, graph) for c in unexpected)


def test_no_import_cycles_between_packages():
    graph = package_graph(import_graph())
    unexpected = [c for c in cycles(graph) if c not in KNOWN_PACKAGE_CYCLES]
    assert not unexpected, "package import cycles:\n" + "\n".join(_describe(c, graph) for c in unexpected)


def test_formats_imports_only_errors_and_atomic():
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith("medmamba.formats"):
            outside = {t for t in targets if not t.startswith("medmamba.formats")}
            assert outside <= {"medmamba.errors", "medmamba.atomic"}, f"{module} imports {sorted(outside)}"


def _json_parse_calls(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("load", "loads") and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "json"):
            lines.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module == "json" and any(
                a.name in ("load", "loads") for a in node.names):
            lines.append(node.lineno)
    return lines


def test_json_is_parsed_only_in_formats():
    offenders = []
    for module, (path, _) in sorted(_modules().items()):
        if module.startswith("medmamba.formats") or module in JSON_PARSE_ALLOWED:
            continue
        offenders += [f"{path.relative_to(PACKAGE_ROOT.parent)}:{line}"
                      for line in _json_parse_calls(ast.parse(path.read_text(encoding="utf-8")))]
    assert not offenders, ("parse JSON files with medmamba.formats.json_io.read_json, not json.load(s): "
                           + ", ".join(offenders))


def test_json_parse_detector_sees_both_forms():
    tree = ast.parse("import json\nfrom json import loads\njson.load(fh)\nx = loads(text)\n")
    assert _json_parse_calls(tree) == [2, 3]
