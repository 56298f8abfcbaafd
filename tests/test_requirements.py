"""What `make install` brings is the runtime only, and every install resolves to pinned versions."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_TOOLING = {"pytest", "playwright", "schemathesis", "ruff", "websockets", "openapi-spec-validator"}


def pins(path: Path) -> dict[str, str]:
    """{normalised name: version} of a requirements file's `name[extras]==version` lines."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]+\])?==([^\s;]+)", line)
        assert match, f"{path.name}: {line!r} is not pinned with =="
        found[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return found


def test_runtime_requirements_hold_no_test_or_benchmark_tooling():
    runtime = pins(ROOT / "requirements.txt")
    assert not {name for name in runtime if name.startswith("pytest") or name in TEST_TOOLING}
    assert "-r requirements.txt" in (ROOT / "requirements-test.txt").read_text()
    assert not set(runtime) & set(pins(ROOT / "requirements-test.txt"))


def test_constraints_pin_every_direct_requirement_at_its_version():
    constraints = pins(ROOT / "constraints.txt")
    for name in ("requirements.txt", "requirements-test.txt", "bench/requirements.txt"):
        for package, version in pins(ROOT / name).items():
            pinned = constraints.get(package)
            assert pinned == version, f"{name}: {package}=={version}, constraints: {pinned}; make constraints"


def test_every_install_in_the_makefile_uses_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if re.search(r"\$\(PIP\)|pip install", line)]
    assert installs
    for line in installs:
        assert (
            "$(PIP)" in line
            or "-c constraints.txt" in line
            or "--upgrade pip" in line
            or ("constraints-venv" in line)
        ), line
    assert "PIP := $(PY) -m pip install --quiet -c constraints.txt" in makefile
    run_target = re.search(r"^run: (.*)$", makefile, re.MULTILINE)[1]
    assert run_target.split() == ["install"]
