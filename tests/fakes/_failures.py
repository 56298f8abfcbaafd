"""Scripted and random provider errors, shared by all fakes so tests program them the same way."""

from __future__ import annotations

import collections
import random
import threading
from collections.abc import Hashable


class FailurePlan:
    """Decides, per request, whether to answer with an error instead of success.

    Precedence: a failure programmed for the request's key (device token, subscription id),
    then the queue of "next N requests fail", then the random error rate.
    """

    def __init__(self, error_rate: float = 0.0, rate_error: Hashable | None = None, seed: int = 0) -> None:
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError("error_rate is a fraction between 0 and 1")
        self._lock = threading.Lock()
        self._per_key: dict[Hashable, list] = {}  # key -> [error, remaining or None=forever]
        self._queue: collections.deque = collections.deque()
        self.error_rate = error_rate
        self.rate_error = rate_error
        self._rng = random.Random(seed)  # seeded so benchmark runs are reproducible

    def fail_key(self, key: Hashable, error: Hashable, times: int | None = None) -> None:
        """Make requests for `key` fail with `error`, forever or for the next `times` requests."""
        with self._lock:
            self._per_key[key] = [error, times]

    def fail_next(self, error: Hashable, count: int = 1) -> None:
        """Make the next `count` requests (any key) fail with `error`."""
        with self._lock:
            self._queue.extend([error] * count)

    def clear(self) -> None:
        """Forget all programmed failures (the error rate stays)."""
        with self._lock:
            self._per_key.clear()
            self._queue.clear()

    def choose(self, key: Hashable) -> Hashable | None:
        """Return the error to answer this request with, or None to let it succeed."""
        with self._lock:
            entry = self._per_key.get(key)
            if entry is not None:
                error, remaining = entry
                if remaining is not None:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        del self._per_key[key]
                return error
            if self._queue:
                return self._queue.popleft()
            if self.error_rate and self._rng.random() < self.error_rate:
                return self.rate_error
        return None
