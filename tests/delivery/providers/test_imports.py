"""Providers depend on the delivery interface and notifyproject, never on the devices app."""

import ast
from pathlib import Path

import delivery.providers

PROVIDERS_DIR = Path(delivery.providers.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_provider_imports_the_devices_app():
    offenders = {
        path.name: sorted(name for name in imported_modules(path) if name.split(".")[0] == "devices")
        for path in sorted(PROVIDERS_DIR.glob("*.py"))
    }
    assert {name: modules for name, modules in offenders.items() if modules} == {}
