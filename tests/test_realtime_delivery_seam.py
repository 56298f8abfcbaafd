"""Delivery and realtime meet in one module each way (docs/architecture.md, Parts and allowed
imports): delivery/ imports only `realtime.api`, realtime/ imports only `delivery.streams_api`,
both at module level, and nothing `realtime.api` imports reaches delivery/, so the two can
never form an import cycle. Read from the source with ast; nothing is imported."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REALTIME_FACE = "realtime.api"
DELIVERY_FACE = "delivery.streams_api"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_of(package: str) -> dict[str, Path]:
    return {module_name(path): path for path in sorted((ROOT / package).rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module imported, line, at module level) for every import in the file, lazy ones included.

    `from a import b` names `a.b` when that is a module of ours, else `a`.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [
                f"{node.module}.{alias.name}" if is_module(f"{node.module}.{alias.name}") else node.module
                for alias in node.names
            ]
        else:
            continue
        found += [(name, node.lineno, id(node) in top_level) for name in names]
    return found


def is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


def crossings(importer: str, imported: str) -> list[tuple[str, int, str, bool]]:
    """Every import of `imported` (a package) in the modules of `importer`."""
    return [
        (module, line, name, top_level)
        for module, path in modules_of(importer).items()
        for name, line, top_level in imports(path)
        if in_package(name, imported)
    ]


def test_delivery_imports_realtime_only_through_its_face():
    wrong = [f"{module}:{line} imports {name}" for module, line, name, _ in crossings("delivery", "realtime")]
    wrong = [entry for entry in wrong if not entry.endswith(f" {REALTIME_FACE}")]
    assert wrong == [], f"delivery/ may import realtime/ only as {REALTIME_FACE}"


def test_realtime_imports_delivery_only_through_its_face():
    wrong = [f"{module}:{line} imports {name}" for module, line, name, _ in crossings("realtime", "delivery")]
    wrong = [entry for entry in wrong if not entry.endswith(f" {DELIVERY_FACE}")]
    assert wrong == [], f"realtime/ may import delivery/ only as {DELIVERY_FACE}"


def test_the_faces_are_imported_at_module_level():
    """A function-level import would hide a cycle rather than remove it."""
    lazy = [
        f"{module}:{line} imports {name} inside a function"
        for importer, imported in (("delivery", "realtime"), ("realtime", "delivery"))
        for module, line, name, top_level in crossings(importer, imported)
        if not top_level
    ]
    assert lazy == []


def test_nothing_the_realtime_face_imports_reaches_delivery():
    """Delivery imports `realtime.api` at module level, so what that pulls in (publish, presence,
    the node registry, frames) must not come back into delivery/."""
    ours = ("realtime", "delivery", "devices", "notifyproject")
    seen, chain = {REALTIME_FACE}, {REALTIME_FACE: [REALTIME_FACE]}
    todo = [REALTIME_FACE]
    while todo:
        module = todo.pop()
        base = ROOT.joinpath(*module.split("."))
        path = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        for name, _line, top_level in imports(path):
            if top_level and name not in seen and any(in_package(name, package) for package in ours):
                if not is_module(name):
                    continue
                seen.add(name)
                chain[name] = [*chain[module], name]
                todo.append(name)
    reached = [" -> ".join(chain[name]) for name in sorted(seen) if in_package(name, "delivery")]
    assert reached == []


def test_the_check_sees_both_faces_used():
    """The checks above pass vacuously if the faces are renamed; they must be the ones in use."""
    assert any(name == REALTIME_FACE for *_, name, _ in crossings("delivery", "realtime"))
    assert any(name == DELIVERY_FACE for *_, name, _ in crossings("realtime", "delivery"))
