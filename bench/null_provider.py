"""A provider that accepts everything at once: measures Clarion's own cost, not a network's."""

from delivery.providers import Outcome, SendResult


class NullProvider:
    platform = "null"

    def not_configured_reason(self) -> str:
        return ""

    def send(self, message, targets):
        return [
            SendResult(t.delivery_id, Outcome.SENT, provider_message_id=f"null-{t.delivery_id}")
            for t in targets
        ]
