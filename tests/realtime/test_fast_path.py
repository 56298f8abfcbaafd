"""The WebSocket fast path (realtime/transport.py): used under the pinned daphne, checked once,
and replaced by the ASGI send, loudly, when daphne, autobahn or Twisted change under it."""

import functools
import logging
import re
import socket
import sys
from collections import deque
from types import SimpleNamespace

import httpx
import pytest
from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings
from django.test import Client
from twisted.internet import tcp
from websockets.frames import Frame, Opcode
from websockets.sync.client import connect

from realtime import transport
from realtime.transport import check_fast_path, check_parking, small_client_text
from tests.delivery.factories import send
from tests.realtime.conftest import open_socket, recv_json, recv_type, wait_online
from tests.support.processes import WebServer, wait_until

GAUGE = "clarion_realtime_fast_path_enabled"


def fast_path_gauge(web) -> float | None:
    text = httpx.get(f"{web.url}/metrics", timeout=10).text
    found = re.search(rf"^{GAUGE} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def exchange_frames(web, user, token) -> None:
    """A notification and a pong arrive over a socket of this server."""
    with open_socket(web, token) as ws:
        wait_online(user)
        notification = send({"users": [user.username]}, title="over the socket", route="realtime")
        assert recv_type(ws, "notification")["id"] == notification.pk
        ws.send('{"type": "ping"}')
        assert recv_type(ws, "pong") == {"type": "pong"}
        second = send({"users": [user.username]}, title="x" * 300, route="realtime")
        assert recv_type(ws, "notification")["id"] == second.pk
        ws.send('{"type": "nonsense"}')
        assert recv_json(ws)["code"] == "unknown_type"


@pytest.mark.django_db(transaction=True)
def test_the_pinned_daphne_writes_frames_on_the_fast_path(start_web, alice, token_for):
    web = start_web()
    assert fast_path_gauge(web) is None  # checked on the first connection, not before
    exchange_frames(web, alice, token_for(alice))
    # A session socket's send is wrapped by Channels' session middleware: found through it too.
    browser = Client()
    browser.force_login(alice)
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"
    headers = {"Cookie": cookie, "Origin": web.url}
    with connect(f"{web.ws_url}/ws/v1/notifications/", additional_headers=headers, open_timeout=10) as ws:
        wait_online(alice)
        notification = send({"users": ["alice"]}, title="by session", route="realtime")
        assert recv_type(ws, "notification")["id"] == notification.pk
    assert fast_path_gauge(web) == 1, "the fast path is off under the pinned daphne: " + "".join(web.output)
    assert any("realtime fast path on" in line for line in web.output)
    assert not any("WARNING" in line and "fast path" in line for line in web.output), "".join(web.output)


@pytest.fixture
def changed_daphne(transactional_db):
    """daphne started through tests/support/daphne_changed.py."""
    web = WebServer()
    web.args = [sys.executable, "-m", "tests.support.daphne_changed", *web.args[1:]]
    web.start()
    try:
        web.wait_ready()
        yield web
    finally:
        web.stop()


def test_a_daphne_that_hides_its_protocol_gets_frames_through_asgi_send(changed_daphne, alice, token_for):
    exchange_frames(changed_daphne, alice, token_for(alice))
    assert fast_path_gauge(changed_daphne) == 0
    warning = wait_until(
        lambda: next((line for line in changed_daphne.output if "fast path OFF" in line), None),
        message="the fast-path warning in daphne's output",
    )
    assert "WARNING" in warning and "protocol was not found" in warning


def _connected_protocol(sock: socket.socket) -> WebSocketProtocol:
    """daphne's protocol class with the attributes it has once a socket is open, on a real
    Twisted TCP connection (the peer's objects, not ours)."""
    protocol = WebSocketProtocol()
    protocol.transport = tcp.Connection(sock, protocol)
    protocol.state = protocol.STATE_OPEN
    protocol.send_state = protocol.SEND_STATE_GROUND
    protocol.send_queue = deque()
    protocol._perMessageCompress = None
    protocol.maxMessagePayloadSize = 0
    protocol.failByDrop = True
    protocol.last_ping = 0.0
    protocol.server = SimpleNamespace(ping_interval=20)
    return protocol


def test_the_check_names_what_an_upgrade_took_away():
    left, right = socket.socketpair()
    try:
        protocol = _connected_protocol(left)
        assert check_fast_path(protocol).enabled
        del protocol.transport._tempDataLen  # as a Twisted release that renamed it would be
        check = check_fast_path(protocol)
        assert not check.enabled and "transport._tempDataLen" in check.reason
        protocol.transport._tempDataLen = 0
        del protocol._perMessageCompress
        check = check_fast_path(protocol)
        assert not check.enabled and "protocol._perMessageCompress" in check.reason
        assert not check_fast_path(None).enabled
    finally:
        left.close()
        right.close()


@pytest.mark.django_db
def test_a_missing_attribute_turns_the_fast_path_off_with_a_warning_and_gauge(client, monkeypatch, caplog):
    """The check runs on the process's first connection; frames then go through ASGI send
    (delivered that way under a real daphne: test_a_daphne_that_hides_its_protocol_...)."""
    monkeypatch.setattr(transport, "_check", None)  # this process has had no connection yet
    left, right = socket.socketpair()
    try:
        protocol = _connected_protocol(left)
        del protocol.transport._tempDataLen
        send = functools.partial(_handle_reply, protocol)  # how daphne hands over `send`
        with caplog.at_level(logging.WARNING, logger="realtime.transport"):
            assert transport.open_socket(send) is None  # the consumer writes through `send`
            assert transport.open_socket(send) is None  # checked once: one warning
        warnings = [r.getMessage() for r in caplog.records if r.name == "realtime.transport"]
        assert len(warnings) == 1 and "transport._tempDataLen" in warnings[0], warnings
        assert f"{GAUGE} 0" in client.get("/metrics").content.decode().splitlines()
    finally:
        left.close()
        right.close()


async def _handle_reply(protocol, message):
    """Where daphne's `send` leads (daphne.server.Server.handle_reply); never called here."""


def test_taking_sockets_off_daphnes_list_is_checked_and_the_check_names_what_is_missing():
    """Sockets leave daphne's `connections` (ParkedSockets) only where daphne still tracks,
    times out and closes them as it does now; otherwise they keep a standing future there."""
    left, right = socket.socketpair()
    try:
        protocol = _connected_protocol(left)
        protocol.socket_opened = 0.0
        protocol.server = SimpleNamespace(
            connections={}, protocol_disconnected=print, ping_interval=20, websocket_timeout=86400
        )
        assert check_parking(protocol).enabled
        protocol.server.connections = []  # a daphne keeping its connections otherwise
        check = check_parking(protocol)
        assert not check.enabled and "server.connections as a dict" in check.reason
        del protocol.server.protocol_disconnected
        check = check_parking(protocol)
        assert not check.enabled and "server.protocol_disconnected" in check.reason
    finally:
        left.close()
        right.close()


def _client_frame(opcode: Opcode, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """A frame as the websockets library's client writes it (random mask)."""
    return Frame(opcode, payload, fin=fin).serialize(mask=mask, extensions=[])


def test_a_small_client_frame_arriving_alone_is_read_without_autobahn_and_anything_else_is_not():
    """Parked sockets read a lone small text frame themselves (realtime/transport.py); every
    other shape goes to autobahn's parser, which enforces the protocol as before."""
    ping = b'{"type": "ping"}'
    for payload in (ping, "née ✓".encode(), b"", b"x" * 125):
        for _ in range(20):  # masks vary
            assert small_client_text(_client_frame(Opcode.TEXT, payload)) == payload
    others = [
        _client_frame(Opcode.TEXT, b"x" * 126),  # 16-bit length
        _client_frame(Opcode.TEXT, ping, mask=False),  # a client must mask (autobahn fails it)
        _client_frame(Opcode.TEXT, ping, fin=False),  # a fragment
        _client_frame(Opcode.BINARY, ping),
        _client_frame(Opcode.PING, b""),
        _client_frame(Opcode.CLOSE, b"\x03\xe8"),
        _client_frame(Opcode.TEXT, b"\xff\xfe"),  # not UTF-8: autobahn closes with 1007
        _client_frame(Opcode.TEXT, ping) + _client_frame(Opcode.TEXT, ping),  # two at once
        _client_frame(Opcode.TEXT, ping)[:-1],  # part of one
        b"",
    ]
    for data in others:
        assert small_client_text(data) is None, data
