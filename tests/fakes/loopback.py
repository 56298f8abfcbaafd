"""A guard for tests: nothing may resolve or connect to a non-loopback host.

pytest-socket refuses such connects too, but an SDK background thread may swallow the error;
this records every attempt and fails the test. No Django here: the fakes' self-tests use it too.
"""

import ipaddress
import socket

import pytest


def is_loopback(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host in (None, "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail the test if anything resolves or connects to a non-loopback host."""
    escapes: list = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if not is_loopback(host):
            escapes.append(host)
            raise socket.gaierror(socket.EAI_NONAME, f"test blocked lookup of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address):
        if isinstance(address, tuple) and not is_loopback(address[0]):
            escapes.append(address[0])
            raise ConnectionRefusedError(f"test blocked connection to {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    yield escapes
    assert escapes == [], f"traffic tried to leave loopback: {escapes}"
