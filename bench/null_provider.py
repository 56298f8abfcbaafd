"""A provider that accepts everything at once: measures Clarion's own cost, not a network's."""

from delivery.providers import Outcome, SendResult


class NullProvider:
    platform = "null"

    def __init__(self, credentials=None):  # one per app, like the real providers
        self.app = credentials.app if credentials is not None else "default"

    def not_configured_reason(self) -> str:
        return ""

    def send(self, message, targets):
        return [
            SendResult(t.delivery_id, Outcome.SENT, provider_message_id=f"null-{t.delivery_id}")
            for t in targets
        ]
