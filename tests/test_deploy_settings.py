"""HTTPS settings from the environment, and Django's deployment check with the settings
docs/security.md documents for production (Input limits and browser hardening)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent

# The production environment docs/security.md shows, with a throwaway secret.
PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "k7Qm2v9XwR4tY8zP1sN6bL3hJ0cF5gD2aE7uI9oK4yT1rW8qZx3Vb6Nm1Lp0Hs5Jd",
    "ALLOWED_HOSTS": "push.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://push.example.com",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
}
# What the test run sets for its own convenience and a production host would not.
TEST_ONLY = {"SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "ALLOWED_HOSTS", "DEBUG", "SECRET_KEY"}


def run_python(args: list[str], **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in TEST_ONLY and not k.startswith("PYTEST")}
    clean["DJANGO_SETTINGS_MODULE"] = "notifyproject.settings"
    clean.update(env)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_with_the_documented_production_settings():
    result = run_python(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout, result.stdout


def test_the_production_settings_are_written_in_the_security_doc():
    doc = (ROOT / "docs" / "security.md").read_text()
    for name, value in PRODUCTION_ENV.items():
        if name != "SECRET_KEY":
            assert f"{name}={value}" in doc or f"{name}='{value}'" in doc, name


PROXY_PROBE = (
    "import django, json; from django.conf import settings; django.setup();"
    "print(json.dumps(settings.SECURE_PROXY_SSL_HEADER))"
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("X-Forwarded-Proto: https", ["HTTP_X_FORWARDED_PROTO", "https"]),
        ("X-Forwarded-Ssl: on", ["HTTP_X_FORWARDED_SSL", "on"]),
        ("off", None),
    ],
)
def test_the_proxy_ssl_header_is_read_from_the_environment(value, expected):
    result = run_python(["-c", PROXY_PROBE], DEBUG="0", SECRET_KEY="x" * 50, SECURE_PROXY_SSL_HEADER=value)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected


def test_a_malformed_proxy_ssl_header_stops_start_up():
    result = run_python(["-c", PROXY_PROBE], DEBUG="0", SECRET_KEY="x" * 50, SECURE_PROXY_SSL_HEADER="https")
    assert result.returncode != 0 and "SECURE_PROXY_SSL_HEADER must look like" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_a_live_server_redirects_to_https_and_sends_hsts_when_configured(start_web):
    web = start_web(
        SECURE_SSL_REDIRECT="1", SECURE_HSTS_SECONDS="31536000", SECURE_HSTS_INCLUDE_SUBDOMAINS="1"
    )
    with httpx.Client(base_url=web.url, timeout=10) as http:
        plain = http.get("/api/v1/topics/")
        assert plain.status_code == 301
        assert plain.headers["location"] == f"https://127.0.0.1:{web.port}/api/v1/topics/"
        # Through the TLS proxy (it says so in X-Forwarded-Proto): served, with HSTS.
        proxied = http.get("/api/v1/topics/", headers={"X-Forwarded-Proto": "https"})
        assert proxied.status_code == 401
        assert proxied.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
        # Probes inside the network still reach health over plain HTTP.
        assert http.get("/healthz").status_code == 200
