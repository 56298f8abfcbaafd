"""Helpers for realtime tests: sockets against a live daphne, waiting for presence."""

import json
import time

import pytest
from websockets.sync.client import connect

from realtime.presence import users_online
from tests.support.processes import wait_until

RECV_TIMEOUT_SECS = 20


def open_socket(web, token: str | None, after=None, **kwargs):
    query = []
    if token is not None:
        query.append(f"token={token}")
    if after is not None:
        query.append(f"after={after}")
    return connect(f"{web.ws_url}/ws/v1/notifications/?{'&'.join(query)}", open_timeout=10, **kwargs)


def recv_json(ws, timeout: float = RECV_TIMEOUT_SECS) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def recv_type(ws, kind: str, timeout: float = RECV_TIMEOUT_SECS) -> dict:
    """The next frame of this type, skipping others (e.g. pongs); fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        frame = recv_json(ws, max(0.01, deadline - time.monotonic()))
        if frame.get("type") == kind:
            return frame


def wait_online(*users, timeout: float = 20):
    ids = [user.pk for user in users]
    wait_until(lambda: users_online(ids) == set(ids), timeout=timeout, message=f"users {ids} online")


def wait_offline(*users, timeout: float = 20):
    ids = [user.pk for user in users]
    wait_until(lambda: not users_online(ids), timeout=timeout, message=f"users {ids} offline")


@pytest.fixture
def token_for(client_for):
    """A fresh end-user token for a user."""
    return lambda user: client_for(user).token
