"""The per-user message stream that WebSocket replay, long-polling and SSE read."""

from django.utils import timezone

from delivery.models import Channel, Delivery, DeliveryStatus, InboxMessage, UserStream
from delivery.selectors import message_payload

REPLAY_PAGE = 200  # messages per query while catching a client up


def stream_position(user_id: int) -> int:
    return UserStream.objects.filter(user_id=user_id).values_list("last_seq", flat=True).first() or 0


def live_messages_after(
    user_id: int, after: int, limit: int = REPLAY_PAGE, until: int | None = None
) -> list[dict]:
    """Realtime messages with cursor > after (≤ until), oldest first, as clients see them."""
    rows = InboxMessage.objects.filter(user_id=user_id, seq__gt=after, live=True)
    if until is not None:
        rows = rows.filter(seq__lte=until)
    rows = list(rows.select_related("notification").order_by("seq")[:limit])
    if rows:
        Delivery.objects.filter(
            user_id=user_id,
            channel=Channel.REALTIME,
            status=DeliveryStatus.QUEUED,
            notification_id__in=[row.notification_id for row in rows],
        ).update(status=DeliveryStatus.SENT, sent_at=timezone.now(), attempts=1)
    return [message_payload(row.notification, row.seq) for row in rows]
