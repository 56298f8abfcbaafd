"""The layers' arrows, read from the import statements themselves (docs/architecture.md).

The admin console imports every domain package and none imports it; devices knows nothing of
sending; providers speak to addresses, not to device rows; identities sit below the domain.
Imports inside functions count as much as those at the top of a module.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSOLE = "notifyproject.console"
IDENTITIES = "notifyproject/identities"

# (the importing modules' folder, what they must not import)
FORBIDDEN = [
    ("devices", ("delivery", "realtime", CONSOLE)),
    ("delivery", (CONSOLE,)),
    ("realtime", (CONSOLE,)),
    ("delivery/providers", ("devices",)),
    (IDENTITIES, ("delivery", "realtime", CONSOLE)),
]


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def arrows(folder: str) -> dict[str, set[str]]:
    """Each module under `folder` (repository-relative) and the modules it imports."""
    return {
        str(path.relative_to(ROOT)): imported_modules(path) for path in sorted((ROOT / folder).rglob("*.py"))
    }


def is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_walker_sees_imports_at_the_top_and_inside_functions():
    delivery = arrows("delivery")
    assert "devices.models" in delivery["delivery/models.py"]
    assert "delivery.tasks" in delivery["delivery/fanout.py"]  # imported inside a function


def test_no_module_imports_across_a_forbidden_arrow():
    wrong = [
        f"{module} imports {target}"
        for folder, forbidden in FORBIDDEN
        for module, targets in arrows(folder).items()
        for target in sorted(targets)
        if any(is_within(target, package) for package in forbidden)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_console_and_identities_are_where_the_arrows_say():
    assert (ROOT / "notifyproject/console/admin.py").exists()
    assert (ROOT / IDENTITIES / "credentials.py").exists()
    assert not list((ROOT / "delivery").rglob("admin*.py")) and not (ROOT / "devices/admin.py").exists()
