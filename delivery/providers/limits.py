"""Payload size limits of every push platform, judged on the final encoded payload.

The API refuses a send (413) that some platform would refuse as too large, before anything is
recorded or sent; each provider checks again per send, for what only a real send reveals.
"""

from delivery.providers import apns, fcm, webpush
from delivery.providers.base import PushMessage

# The widest notification id (PostgreSQL bigint): a real id only makes the payload shorter.
WIDEST_NOTIFICATION_ID = 2**63 - 1


def payload_too_large(message: PushMessage) -> str:
    """Why a platform would refuse `message` as too large, or "" when every platform takes it."""
    apns_bytes = len(apns.apns_payload_bytes(message))
    if apns_bytes > apns.MAX_PAYLOAD_BYTES:
        return f"The APNs payload would be {apns_bytes} bytes; APNs takes at most {apns.MAX_PAYLOAD_BYTES}."
    fcm_bytes = fcm.fcm_counted_size(message)
    if fcm_bytes > fcm.MAX_PAYLOAD_BYTES:
        return (
            f"The FCM payload (data and notification) would be {fcm_bytes} bytes; "
            f"FCM takes at most {fcm.MAX_PAYLOAD_BYTES}."
        )
    if not message.options.silent:  # a silent send is skipped on Web Push, never encrypted
        encrypted = webpush.web_push_encrypted_size(len(webpush.web_push_payload(message)))
        if encrypted > webpush.MAX_ENCRYPTED_BYTES:
            return (
                f"The Web Push payload would be {encrypted} bytes once encrypted; "
                f"push services must take only {webpush.MAX_ENCRYPTED_BYTES}."
            )
    return ""
