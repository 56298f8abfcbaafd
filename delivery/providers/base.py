"""The one interface every push provider implements, and the shapes it speaks in."""

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class PushMessage:
    """A notification as every provider needs it; built once per notification."""

    notification_id: int
    title: str
    body: str
    data: dict
    url: str
    icon: str
    priority: str  # "normal" | "high"
    expires_at: datetime
    collapse_key: str
    # Not a notification: tells the device to remove the one it shows for notification_id (read
    # elsewhere). Each provider sends it as a silent data/background push (docs/providers.md).
    withdraw: bool = False

    def ttl_secs(self, now: datetime) -> int:
        return max(0, int((self.expires_at - now).total_seconds()))


@dataclass(frozen=True)
class PushTarget:
    """One device to send to, identified by its delivery so results map back."""

    delivery_id: int
    device_id: int
    token: str
    environment: str = ""
    p256dh: str = ""
    auth: str = ""


class Outcome(enum.Enum):
    SENT = "sent"  # accepted by the provider
    RETRY = "retry"  # transient: try again after retry_after or back-off
    TOKEN_DEAD = "token_dead"  # the address is gone: deactivate the device, never retry
    FAILED = "failed"  # permanent for this message (bad payload, auth): do not retry


@dataclass(frozen=True)
class SendResult:
    delivery_id: int
    outcome: Outcome
    provider_message_id: str = ""
    error: str = ""  # the provider's own code first, e.g. "UNREGISTERED: ..."
    retry_after_secs: float | None = None


@dataclass
class ProviderUnavailable:
    """Returned by the registry when a platform is not configured."""

    reason: str
    results: list = field(default_factory=list)


class PushProvider(Protocol):
    """Sends one message to many devices of one platform; never raises for a device's error."""

    platform: str

    def send(self, message: PushMessage, targets: list[PushTarget]) -> list[SendResult]: ...
