"""docs/api.md and the OpenAPI schema describe the same operations, and the docs link only inside
the repository."""

import re
import subprocess
from pathlib import Path

import pytest
from django.urls import Resolver404, resolve

from notifyproject.openapi import OPERATIONS

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "api.md"
OPERATION_HEADING = re.compile(r"^#{2,4} `(GET|POST|PUT|PATCH|DELETE) (/api/[^`?]*)`", re.MULTILINE)


def normalised(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)  # {id} in the docs, {device_id} in the schema


def documented_operations() -> set[tuple[str, str]]:
    return {(method, normalised(path)) for method, path in OPERATION_HEADING.findall(REFERENCE.read_text())}


@pytest.mark.django_db
def test_every_schema_operation_has_a_section_in_the_reference_and_back(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    in_schema = {
        (method.upper(), normalised(path))
        for path, item in schema["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    documented = documented_operations()
    assert len(documented) > 15  # the headings are found
    missing = sorted(in_schema - documented)
    assert not missing, f"add a `### METHOD /path` section to docs/api.md for {missing}"
    stale = sorted(operation for operation in documented - in_schema if served(operation[1]))
    assert not stale, f"docs/api.md documents operations the schema does not have: {stale}"
    # A documented operation this build does not route at all must still be one the schema's
    # policy names (notifyproject/openapi.py), so a mistyped path in the reference fails here.
    named = {(method, normalised(path)) for path, method in OPERATIONS}
    unrouted = sorted(operation for operation in documented - in_schema if not served(operation[1]))
    assert set(unrouted) <= named, (
        f"docs/api.md documents unknown operations: {sorted(set(unrouted) - named)}"
    )


def served(path: str) -> bool:
    try:
        resolve(path.replace("{}", "1"))
    except Resolver404:
        return False
    return True


def markdown_links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_readme_and_docs_link_only_inside_the_repository():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in markdown_links(page.read_text()):
            if re.match(r"[a-z]+:", target):  # http(s):, mailto:
                continue
            file = target.split("#", 1)[0]
            if not file:
                continue
            resolved = (page.parent / file).resolve()
            assert resolved.is_relative_to(ROOT), f"{page.name} links outside the repository: {target}"
            assert resolved.exists(), f"{page.name} links to a missing file: {target}"


def test_no_tracked_file_points_at_a_contract_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    offenders = [
        name
        for name in tracked.stdout.splitlines()
        if name != "tests/test_api_reference.py"
        and (ROOT / name).is_file()
        and re.search(r"\.\./shared|shared/API\.md", (ROOT / name).read_text(errors="ignore"))
    ]
    assert not offenders
