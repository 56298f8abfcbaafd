"""The WebSocket transport against a live daphne, Redis, PostgreSQL and a real worker."""

import base64
import contextlib
import json
import os
import socket
import threading
import time

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.sync.client import connect
from websockets.uri import parse_uri

from delivery.models import InboxMessage, Notification
from realtime.consumers import MAX_CLIENT_FRAME_BYTES
from realtime.node import MAX_CONNECTIONS_PER_USER
from realtime.presence import get_presence, users_online
from realtime.publish import publish_messages
from realtime.streams import notification_frame
from tests.delivery.factories import send, sender
from tests.realtime.conftest import open_socket, recv_json, recv_type, wait_offline, wait_online
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def close_code(ws, timeout: float = 15) -> int:
    """Read until the server closes the socket; its close code."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else closed.sent.code
    raise AssertionError("the server did not close the socket")


def test_a_bad_or_missing_token_is_closed_with_4401(start_web, alice):
    web = start_web()
    with open_socket(web, "ct_not-a-token") as ws:
        assert close_code(ws) == 4401
    with open_socket(web, None) as ws:
        assert close_code(ws) == 4401


def test_a_user_never_sees_another_users_messages(start_web, start_worker, alice, bob, token_for):
    web = start_web()
    start_worker()
    with open_socket(web, token_for(alice)) as alice_ws, open_socket(web, token_for(bob)) as bob_ws:
        wait_online(alice, bob)
        for_alice = send({"users": ["alice"]}, title="for alice")
        for_bob = send({"users": ["bob"]}, title="for bob")
        assert recv_type(bob_ws, "notification")["id"] == for_bob.pk
        assert recv_type(alice_ws, "notification")["id"] == for_alice.pk
        # Bob's next frame is the answer to his ping: nothing of Alice's came before it.
        bob_ws.send('{"type": "ping"}')
        assert recv_json(bob_ws) == {"type": "pong"}


def test_two_hundred_sends_during_reconnects_arrive_once_each_in_order(
    start_web, start_worker, alice, token_for
):
    web = start_web()
    start_worker()
    token, by = token_for(alice), sender()
    sent_ids: list[int] = []

    def send_all():
        try:
            for number in range(200):
                sent_ids.append(send({"users": ["alice"]}, by=by, title=f"n{number}").pk)
        finally:
            connection.close()

    with contextlib.ExitStack() as sockets:
        ws = sockets.enter_context(open_socket(web, token))
        wait_online(alice)
        thread = threading.Thread(target=send_all)
        thread.start()
        received: list[dict] = []
        deadline = time.monotonic() + 120
        while len(received) < 200:
            assert time.monotonic() < deadline, f"only {len(received)} of 200 arrived"
            received.append(recv_type(ws, "notification", timeout=60))
            if len(received) in (10, 50, 100, 150):
                # Reconnect mid-stream, while the worker is still fanning out.
                ws.close()
                ws = sockets.enter_context(open_socket(web, token, after=received[-1]["cursor"]))
        thread.join(60)
        # Anything sent twice would arrive before this later message.
        sentinel = send({"users": ["alice"]}, by=by, title="sentinel")
        assert recv_type(ws, "notification")["id"] == sentinel.pk
    ids = [frame["id"] for frame in received]
    assert len(ids) == len(set(ids)) == 200
    assert set(ids) == set(sent_ids)
    cursors = [frame["cursor"] for frame in received]
    assert cursors == list(range(cursors[0], cursors[0] + 200))  # in cursor (commit) order, no gap


def _raw_websocket(web, token: str, receive_buffer: int) -> socket.socket:
    """A hand-made client whose socket we can stop reading from."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    raw.connect(("127.0.0.1", web.port))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        (
            f"GET /ws/v1/notifications/?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{web.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += raw.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return raw


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_session_socket_from_our_origin_streams_and_a_foreign_origin_is_refused(start_web, alice):
    """Sockets without a token are signed in by the session cookie, only from ALLOWED_HOSTS."""
    web = start_web()
    browser = Client()
    browser.force_login(alice)
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"
    url = f"{web.ws_url}/ws/v1/notifications/"
    with connect(url, additional_headers={"Cookie": cookie, "Origin": web.url}, open_timeout=10) as ws:
        wait_online(alice)
        message = {"id": 1, "cursor": 1, "title": "by session", "body": ""}
        publish_messages([(alice.pk, message)])
        assert recv_json(ws) == {"type": "notification", **message}
    foreign = {"Cookie": cookie, "Origin": "https://elsewhere.example"}
    with connect(url, additional_headers=foreign, open_timeout=10) as ws:
        assert close_code(ws) == 4401


def test_frames_at_every_length_encoding_arrive_intact_and_in_order(start_web, alice, token_for):
    """Frames are built by us (realtime/transport.py): lengths at the edges of the 7-, 16- and
    64-bit length encodings, UTF-8 text, and one larger than a single socket send."""
    web = start_web()

    def message(cursor: int, frame_bytes: int) -> dict:
        base = {"id": cursor, "cursor": cursor, "title": "née ✓", "body": ""}
        padding = frame_bytes - len(notification_frame(base).encode())
        return {**base, "body": "é" * (padding // 2) + "x" * (padding % 2)}

    sizes = [80, 125, 126, 127, 65535, 65536, 65537, 300_000]
    messages = [message(cursor, size) for cursor, size in enumerate(sizes, start=1)]
    assert [len(notification_frame(m).encode()) for m in messages] == sizes
    with open_socket(web, token_for(alice)) as ws:
        wait_online(alice)
        publish_messages([(alice.pk, m) for m in messages])
        received = [ws.recv(timeout=15) for _ in messages]
    assert received == [notification_frame(m) for m in messages]


def test_a_client_that_stops_reading_is_disconnected_and_cannot_grow_server_memory(
    start_web, alice, token_for
):
    web = start_web()
    raw = _raw_websocket(web, token_for(alice), receive_buffer=4096)
    wait_online(alice)
    rss_before = _rss_bytes(web.proc.pid)
    body = "x" * 8000
    total, batch = 3000, 100  # 24 MB for a client that reads nothing
    for start in range(1, total + 1, batch):
        publish_messages(
            [
                (
                    alice.pk,
                    {
                        "id": n,
                        "cursor": n,
                        "title": "big",
                        "body": body,
                        "data": {},
                        "url": "",
                        "icon": "",
                        "created_at": "2026-01-01T00:00:00Z",
                    },
                )
                for n in range(start, start + batch)
            ]
        )
    wait_offline(alice, timeout=30)  # the server closed it and forgot it
    growth = _rss_bytes(web.proc.pid) - rss_before
    assert growth < 12 * 1024 * 1024, f"daphne grew by {growth / 1e6:.1f} MB for 24 MB unread"
    # Reading again, the client finds its stream ended: a close frame or a reset, then EOF.
    raw.settimeout(15)
    received = 0
    try:
        while chunk := raw.recv(65536):
            received += len(chunk)
    except ConnectionResetError:
        pass
    finally:
        raw.close()
    assert received < total * len(body)


def test_connections_per_user_are_capped_and_the_oldest_is_closed_with_4409(start_web, alice, token_for):
    web = start_web()
    token = token_for(alice)
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(open_socket(web, token)) for _ in range(MAX_CONNECTIONS_PER_USER)]
        wait_online(alice)
        for ws in sockets:  # every one is served
            ws.send('{"type": "ping"}')
            assert recv_json(ws) == {"type": "pong"}
        newest = stack.enter_context(open_socket(web, token))
        assert close_code(sockets[0]) == 4409
        newest.send('{"type": "ping"}')
        assert recv_json(newest) == {"type": "pong"}


def test_bad_frames_get_error_frames_and_the_socket_keeps_working(start_web, alice, token_for):
    web = start_web()
    with open_socket(web, token_for(alice)) as ws:
        ws.send("not json")
        assert recv_json(ws)["code"] == "invalid_json"
        ws.send('{"type": "subscribe", "group": "user.1"}')
        assert recv_json(ws)["code"] == "unknown_type"
        ws.send('["ping"]')
        assert recv_json(ws)["code"] == "unknown_type"
        ws.send(json.dumps({"type": "ack", "id": "1; DROP TABLE"}))
        assert recv_json(ws)["code"] == "invalid_ack"
        ws.send(json.dumps({"type": "ack", "id": 987654}))
        assert recv_json(ws)["code"] == "not_found"
        ws.send(json.dumps({"type": "ping", "pad": "x" * MAX_CLIENT_FRAME_BYTES}))
        assert recv_json(ws)["code"] == "frame_too_large"
        ws.send(b"\x00\xff binary")
        assert recv_json(ws)["code"] == "invalid_json"
        ws.send('{"type": "ping"}')
        assert recv_json(ws) == {"type": "pong"}


class FrameLevelClient:
    """A client on websockets' sans-I/O protocol, which shows the server's ping frames (the
    library's connections answer them without telling)."""

    def __init__(self, web, token: str):
        self.protocol = ClientProtocol(parse_uri(f"{web.ws_url}/ws/v1/notifications/?token={token}"))
        self.sock = socket.create_connection(("127.0.0.1", web.port), timeout=10)
        self.protocol.send_request(self.protocol.connect())
        self.pings, self.texts = 0, []
        self._flush()
        deadline = time.monotonic() + 10
        while self.protocol.state is State.CONNECTING:
            assert time.monotonic() < deadline, "no handshake answer"
            self.read(0.2)
        assert self.protocol.state is State.OPEN, self.protocol.handshake_exc

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def read(self, timeout: float) -> None:
        """Take in whatever arrives within `timeout`; pongs to the server's pings go out."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        for event in self.protocol.events_received():
            if isinstance(event, Frame) and event.opcode == Opcode.PING:
                self.pings += 1
            elif isinstance(event, Frame) and event.opcode == Opcode.TEXT:
                self.texts.append(json.loads(event.data))
        self._flush()
        assert self.protocol.state is not State.CLOSED, "the server closed the socket"

    def send_json(self, frame: dict) -> None:
        self.protocol.send_text(json.dumps(frame).encode())
        self._flush()

    def close(self) -> None:
        self.sock.close()


def test_daphne_pings_only_the_sockets_whose_clients_do_not_heartbeat(start_web, alice, bob, token_for):
    """A client that pings on its own keeps its socket alive and proves it live; daphne's
    protocol pings on top only doubled the idle traffic (realtime/transport.py).

    Daphne pings a socket `--ping-interval` after its last incoming frame, checking every 2 s.
    With 1 s and a heartbeat every 3.1 s, each heartbeat interval holds a check that would
    ping the socket; the silent socket is the control that daphne pings at all.
    """
    web = start_web(ping_interval=1)
    heartbeating, silent = FrameLevelClient(web, token_for(alice)), FrameLevelClient(web, token_for(bob))
    try:
        heartbeating.send_json({"type": "ping"})
        deadline = time.monotonic() + 15
        while {"type": "pong"} not in heartbeating.texts:
            assert time.monotonic() < deadline, "no pong"
            heartbeating.read(0.2)
        heartbeating.pings = silent.pings = 0  # from the first heartbeat on; daphne may ping before it
        for _ in range(2):
            interval_ends = time.monotonic() + 3.1
            while time.monotonic() < interval_ends:
                silent.read(0.05)
                heartbeating.read(0.05)
            heartbeating.send_json({"type": "ping"})
        assert silent.pings >= 2
        assert heartbeating.pings == 0
        assert heartbeating.texts.count({"type": "pong"}) >= 2  # the heartbeats were answered
    finally:
        heartbeating.close()
        silent.close()


def _client_frame(payload: bytes) -> bytes:
    """A masked text frame as a browser writes it (random mask)."""
    return Frame(Opcode.TEXT, payload).serialize(mask=True, extensions=[])


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    sock.settimeout(15)
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"the server closed the socket after {data!r}"
        data += chunk
    return data


def test_heartbeats_are_answered_however_their_frames_arrive(start_web, alice, token_for):
    """An open socket reads a lone small frame itself and answers a ping with a pong built
    once (realtime/transport.py, realtime/consumers.py); frames that arrive together or in
    parts go through autobahn. Given the browser client's exact ping, each shape is answered
    with the same bytes, in the order the frames were sent."""
    pong = b"\x81\x0f" + b'{"type":"pong"}'  # unmasked text frame, 15-byte payload
    ping = _client_frame(b'{"type":"ping"}')  # static/clarion/clarion.js sends exactly this
    web = start_web()
    client = FrameLevelClient(web, token_for(alice))
    try:
        client.send_json({"type": "ping"})
        deadline = time.monotonic() + 15
        while {"type": "pong"} not in client.texts:  # the first frame: answered once connected
            assert time.monotonic() < deadline, "no pong"
            client.read(0.2)
        sock = client.sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        sock.sendall(ping)  # alone
        assert _receive_exactly(sock, len(pong)) == pong

        sock.sendall(ping + _client_frame(b'{"type": "ping"}') + ping)  # three at once
        assert _receive_exactly(sock, 3 * len(pong)) == 3 * pong

        sock.sendall(ping[:4])  # in two parts
        sock.sendall(ping[4:])
        assert _receive_exactly(sock, len(pong)) == pong

        sock.sendall(_client_frame(b'{"type": "ack", "id": 987654}') + ping)  # an ack waits on the database
        error = b'{"type":"error","code":"not_found","message":"No such message in your inbox.","id":987654}'
        answer = b"\x81" + bytes([len(error)]) + error + pong
        assert _receive_exactly(sock, len(answer)) == answer
    finally:
        client.close()


def test_a_dead_peer_that_does_not_heartbeat_is_pinged_dropped_and_forgotten(
    start_web, alice, bob, token_for
):
    """Open sockets leave daphne's connection list (realtime/transport.py, ParkedSockets); its
    pings and their timeout still find a client that went away without closing.

    Given a client that answers nothing once connected (a dead network) and a live one,
    when daphne's ping interval and ping timeout pass, the dead one's socket is dropped and
    its user goes offline, and the live one, answering daphne's pings, stays.
    """
    web = start_web(ping_interval=1, ping_timeout=2)
    dead, live = FrameLevelClient(web, token_for(alice)), FrameLevelClient(web, token_for(bob))
    try:
        wait_online(alice, bob)
        live.pings = 0
        deadline = time.monotonic() + 20
        while users_online([alice.pk]):
            assert time.monotonic() < deadline, "the dead peer's user is still online"
            live.read(0.1)  # answers pings; fails if the server closed this one
        assert live.pings >= 1  # pinged too, and answering
        dead.sock.settimeout(5)
        try:
            while dead.sock.recv(65536):  # the pings nobody answered, then the end of the stream
                pass
        except ConnectionResetError:
            pass
        live.send_json({"type": "ping"})
        while {"type": "pong"} not in live.texts:
            assert time.monotonic() < deadline, "the live socket was not answered"
            live.read(0.1)
        assert users_online([bob.pk]) == {bob.pk}
    finally:
        dead.close()
        live.close()


def test_a_client_that_heartbeats_and_falls_silent_is_closed_with_4408_and_one_that_pings_stays(
    start_web, alice, bob, token_for
):
    """Heartbeating sockets are the node's to watch (daphne no longer pings them): given two
    clients that ping once, when one falls silent past the heartbeat timeout it is closed
    with 4408 and its user goes offline, while the one that keeps pinging stays open."""
    timeout_secs = 1.5  # production: two 25 s intervals
    web = start_web(CLARION_HEARTBEAT_TIMEOUT_SECS=timeout_secs)
    with open_socket(web, token_for(alice)) as silent, open_socket(web, token_for(bob)) as pinging:
        wait_online(alice, bob)
        for ws in (silent, pinging):
            ws.send('{"type": "ping"}')
            assert recv_json(ws) == {"type": "pong"}
        silent_since = time.monotonic()
        while time.monotonic() < silent_since + 3 * timeout_secs:
            pinging.send('{"type": "ping"}')
            assert recv_json(pinging) == {"type": "pong"}
            time.sleep(timeout_secs / 5)  # the client's heartbeat interval, not a wait for the server
        assert close_code(silent) == 4408
        wait_offline(alice)
        pinging.send('{"type": "ping"}')
        assert recv_json(pinging) == {"type": "pong"}
        assert users_online([bob.pk]) == {bob.pk}


def test_an_oversized_frame_closes_the_socket_with_1009(start_web, alice, token_for):
    web = start_web()
    with open_socket(web, token_for(alice), max_size=None) as ws:
        ws.send("x" * (256 * 1024))
        assert close_code(ws) == 1009


def test_a_flood_of_frames_is_closed_with_4429_and_the_server_lives_on(start_web, alice, token_for):
    web = start_web()
    token = token_for(alice)
    with open_socket(web, token) as ws:
        for _ in range(1000):
            try:
                ws.send("{}")
            except ConnectionClosed:
                break
        assert close_code(ws) == 4429
    with open_socket(web, token) as ws:
        ws.send('{"type": "ping"}')
        assert recv_json(ws) == {"type": "pong"}


def test_an_ack_on_one_tab_clears_the_message_on_the_others(start_web, start_worker, alice, token_for):
    web = start_web()
    start_worker()
    token = token_for(alice)
    with open_socket(web, token) as tab1, open_socket(web, token) as tab2:
        wait_online(alice)
        notification = send({"users": ["alice"]}, title="read me once")
        assert recv_type(tab1, "notification")["id"] == notification.pk
        assert recv_type(tab2, "notification")["id"] == notification.pk
        tab1.send(json.dumps({"type": "ack", "id": notification.pk}))
        assert recv_type(tab2, "read") == {"type": "read", "id": notification.pk, "read_cursor": 1}
        assert recv_type(tab1, "read") == {"type": "read", "id": notification.pk, "read_cursor": 1}


def test_after_replays_missed_messages_and_a_stale_cursor_starts_from_the_end(
    start_web, start_worker, alice, token_for
):
    web = start_web()
    start_worker()
    token = token_for(alice)
    send({"users": ["alice"]}, title="one", route="all")
    send({"users": ["alice"]}, title="two", route="all")
    wait_until(lambda: Notification.objects.filter(status="dispatched").count() == 2, message="dispatch")
    with open_socket(web, token, after=0) as ws:
        in_order = InboxMessage.objects.filter(user=alice).order_by("seq")
        expected = list(in_order.values_list("notification_id", flat=True))
        assert [recv_type(ws, "notification")["id"] for _ in range(2)] == expected
    with open_socket(web, token, after=10_000) as ws:  # a cursor from another database
        wait_online(alice)
        third = send({"users": ["alice"]}, title="three")
        frame = recv_type(ws, "notification")
        assert (frame["id"], frame["cursor"]) == (third.pk, 3)
    with open_socket(web, token, after="-1") as ws:
        assert recv_json(ws)["code"] == "bad_cursor"
        assert close_code(ws) == 4400


def test_presence_names_the_node_holding_the_socket(start_web, alice, token_for):
    web = start_web()
    with open_socket(web, token_for(alice)):
        wait_online(alice)
        nodes = get_presence().nodes_for_users([alice.pk])
        assert len(nodes) == 1 and str(web.proc.pid) in next(iter(nodes))
    wait_offline(alice)


def test_sockets_opened_together_are_each_online_by_their_first_answer(start_web, make_user, token_for):
    """Presence writes are batched per node, yet each connection waits for its own: by the
    time a socket answers its first ping, a send routed by presence reaches it."""
    web = start_web()
    users = [make_user() for _ in range(40)]
    tokens = [token_for(user) for user in users]
    sockets, errors, lock = contextlib.ExitStack(), [], threading.Lock()
    answered = []

    def open_and_ping(token):
        try:
            with lock:
                ws = sockets.enter_context(open_socket(web, token))
            ws.send('{"type":"ping"}')
            recv_type(ws, "pong")
            answered.append(ws)
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    with sockets:
        threads = [threading.Thread(target=open_and_ping, args=(token,)) for token in tokens]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
        assert len(answered) == len(users)
        assert get_presence().online([user.pk for user in users]) == {user.pk for user in users}
    wait_offline(*users)


def _commandstat_calls(command: str) -> int:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)
    finally:
        client.close()


def test_sends_from_many_threads_share_publishes_and_keep_each_users_order(start_web, make_user, token_for):
    """One publisher thread per process: what callers hand over while a PUBLISH is in flight
    goes out together, so 1,000 single-message sends cost far fewer than 1,000 PUBLISHes."""
    from realtime.publish import flush_publishes

    web = start_web()
    users = [make_user() for _ in range(20)]
    per_user, threads_count = 50, 4
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(open_socket(web, token_for(user))) for user in users]
        wait_online(*users)
        publishes_before = _commandstat_calls("publish")

        def send_share(share: int) -> None:
            for cursor in range(1, per_user + 1):
                for user in users[share::threads_count]:
                    message = {"id": cursor, "cursor": cursor, "title": f"m{cursor}", "body": "", "data": {}}
                    publish_messages([(user.pk, message)])

        threads = [threading.Thread(target=send_share, args=(share,)) for share in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert flush_publishes(timeout=20)
        publishes = _commandstat_calls("publish") - publishes_before
        for ws in sockets:
            cursors = [recv_type(ws, "notification")["cursor"] for _ in range(per_user)]
            assert cursors == list(range(1, per_user + 1))
    sends = len(users) * per_user
    assert publishes <= sends // 10, f"{publishes} PUBLISHes for {sends} sends"


def test_a_session_socket_must_come_from_the_sites_exact_origin(start_web, alice):
    """Same host on another port, or another scheme, is another site: its page must not get a
    socket signed in with the user's cookie."""
    web = start_web()
    browser = Client()
    browser.force_login(alice)
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"
    url = f"{web.ws_url}/ws/v1/notifications/"
    other_port = 31337 if web.port != 31337 else 31338
    for origin in (
        f"http://127.0.0.1:{other_port}",
        f"https://127.0.0.1:{web.port}",
        "http://127.0.0.1",
        f"http://localhost:{other_port}",
        "null",
    ):
        with connect(url, additional_headers={"Cookie": cookie, "Origin": origin}, open_timeout=10) as ws:
            assert close_code(ws) == 4401, origin
    with connect(url, additional_headers={"Cookie": cookie, "Origin": web.url}, open_timeout=10) as ws:
        wait_online(alice)


def test_behind_a_tls_proxy_the_origin_is_compared_with_the_forwarded_scheme(settings):
    from realtime.auth import origin_allowed_for_session

    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

    def scope(origin: str, proto: str | None) -> dict:
        headers = [(b"host", b"localhost"), (b"origin", origin.encode())]
        if proto:
            headers.append((b"x-forwarded-proto", proto.encode()))
        return {"type": "websocket", "scheme": "ws", "headers": headers}

    assert origin_allowed_for_session(scope("https://localhost", "https"))
    assert not origin_allowed_for_session(scope("http://localhost", "https"))
    assert not origin_allowed_for_session(scope("https://localhost", None))
    assert origin_allowed_for_session(scope("http://localhost", None))
