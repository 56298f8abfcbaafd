"""Handshake admission: a node refuses at once the WebSocket handshakes it cannot finish soon.

In a reconnect storm (W4) every client of a restarted process comes back within seconds.
Admitted past what the event loop can finish, handshakes queue: each one waits longer, clients
time out and retry into the same queue, and the node spends its CPU on handshakes nobody waits
for any more. Refused at once instead (HTTP 503 with Retry-After, before any database or Redis
work), a client backs off and comes back once the node has caught up. Two bounds, either one
refuses: handshakes in progress in the application, and the event loop's lag (how late a timer
fires), which also sees the work daphne does before the application is called.
See docs/realtime.md (Admission).
"""

import asyncio
import random

from django.conf import settings

from notifyproject import metrics

# How often the event loop's lag is sampled: four timer callbacks a second per process.
LAG_PROBE_SECS = 0.25
# A refused client is told to come back after 1 or 2 s, spread so a refused crowd does not
# return as one; clients that cannot read the header (browsers) back off with jitter anyway.
RETRY_AFTER_SECS = (1, 2)
REFUSED_METRIC = "clarion_realtime_handshakes_refused_total"
REASON_PENDING = "pending_handshakes"
REASON_LAG = "loop_lag"


class Admission:
    """One node's count of handshakes in progress and its event loop's latest lag."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.pending = 0
        self.lag_secs = 0.0
        self.max_pending = settings.CLARION_WS_MAX_PENDING_HANDSHAKES
        self.max_lag_secs = settings.CLARION_WS_MAX_LOOP_LAG_MS / 1000
        self._probing = False

    def start(self) -> None:
        """Sample the loop's lag from now on (one timer per node, never one per socket)."""
        if self.max_lag_secs and not self._probing:
            self._probing = True
            self._schedule_probe()

    def _schedule_probe(self) -> None:
        due = self.loop.time() + LAG_PROBE_SECS
        self.loop.call_at(due, self._probe, due)

    def _probe(self, due: float) -> None:
        self.lag_secs = self.loop.time() - due
        self._schedule_probe()

    def refusal(self) -> str | None:
        """Why a new handshake is refused now, or None: admitted (call `finished` once it is done)."""
        if self.max_pending and self.pending >= self.max_pending:
            reason = REASON_PENDING
        elif self.max_lag_secs and self.lag_secs > self.max_lag_secs:
            reason = REASON_LAG
        else:
            self.pending += 1
            return None
        metrics.count(REFUSED_METRIC, reason=reason)
        return reason

    def finished(self) -> None:
        self.pending -= 1


def retry_after_secs() -> int:
    return random.randint(*RETRY_AFTER_SECS)
