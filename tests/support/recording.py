"""A push provider for tests that records every send in Redis, across processes.

It is configured by import path like any provider (CLARION_PROVIDERS), so the real worker
uses it; tests program outcomes per token and read what was sent. Not a mock of our code:
it stands where FCM/APNs/Web Push would, behind the real provider interface.
"""

import json
import time

import redis
from django.conf import settings

from delivery.providers import Outcome, SendResult

SENT_KEY = "clarion:test:sent"
OUTCOME_KEY = "clarion:test:outcomes"  # token → "retry[:secs]" | "dead" | "fail" | "slow:<ms>"


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


class RecordingProvider:
    platform = "recording"

    def __init__(self, credentials=None):
        self.app = credentials.app if credentials is not None else "default"

    def not_configured_reason(self) -> str:
        return ""

    def send(self, message, targets):
        client = _client()
        outcomes = client.hgetall(OUTCOME_KEY)
        results = []
        for target in targets:
            rule = outcomes.get(target.token.encode(), b"").decode()
            if rule.startswith("slow:"):
                time.sleep(int(rule.split(":")[1]) / 1000)
                rule = ""
            if rule.startswith("retry"):
                after = float(rule.split(":")[1]) if ":" in rule else None
                results.append(
                    SendResult(
                        target.delivery_id,
                        Outcome.RETRY,
                        error="UNAVAILABLE: try later",
                        retry_after_secs=after,
                    )
                )
                client.rpush(f"{SENT_KEY}:attempts", target.delivery_id)
                continue
            if rule == "dead":
                results.append(
                    SendResult(target.delivery_id, Outcome.TOKEN_DEAD, error="UNREGISTERED: token gone")
                )
                continue
            if rule == "fail":
                results.append(SendResult(target.delivery_id, Outcome.FAILED, error="INVALID_ARGUMENT: bad"))
                continue
            client.rpush(
                SENT_KEY,
                json.dumps(
                    {
                        "delivery_id": target.delivery_id,
                        "device_id": target.device_id,
                        "token": target.token,
                        "app": self.app,
                        "notification_id": message.notification_id,
                        "title": message.title,
                        "body": message.body,
                        "data": message.data,
                        "priority": message.priority,
                        "collapse_key": message.collapse_key,
                        "at": time.time(),
                    }
                ),
            )
            results.append(
                SendResult(target.delivery_id, Outcome.SENT, provider_message_id=f"rec-{target.delivery_id}")
            )
        return results


class Recorder:
    """The test side: program outcomes, read sends."""

    def __init__(self):
        self.client = _client()
        self.reset()

    def reset(self):
        self.client.delete(SENT_KEY, OUTCOME_KEY, f"{SENT_KEY}:attempts")

    def program(self, token: str, rule: str):
        self.client.hset(OUTCOME_KEY, token, rule)

    def sent(self) -> list[dict]:
        return [json.loads(item) for item in self.client.lrange(SENT_KEY, 0, -1)]

    def retry_attempts(self) -> list[int]:
        return [int(item) for item in self.client.lrange(f"{SENT_KEY}:attempts", 0, -1)]


RECORDING_PROVIDERS = {
    "fcm": "tests.support.recording.RecordingProvider",
    "apns": "tests.support.recording.RecordingProvider",
    "webpush": "tests.support.recording.RecordingProvider",
}
