"""The suite cannot reach anything but loopback, so a forgotten fake fails loudly."""

import socket

import pytest
from pytest_socket import SocketConnectBlockedError


def test_non_loopback_connections_are_blocked():
    with pytest.raises(SocketConnectBlockedError):
        socket.create_connection(("203.0.113.10", 443), timeout=1)


def test_loopback_is_allowed():
    server = socket.create_server(("127.0.0.1", 0))
    try:
        socket.create_connection(server.getsockname(), timeout=1).close()
    finally:
        server.close()
