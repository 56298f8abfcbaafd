"""Validation of push addresses, shared by the API serializers and the admin.

Registration only checks what can be checked without network I/O. Where a Web Push endpoint
may point is decided by notifyproject.outbound (here for the URL as written, in the provider
again for every address it connects to: a public name can resolve anywhere).
"""

import base64
import binascii
import re

from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.core.exceptions import ValidationError

from notifyproject.outbound import UnsafeURLError, clean_url

FCM_TOKEN_MAX_CHARS = 4096  # FCM tokens are ~150-250 chars today; leave room for growth
FCM_TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_\-:.]+$")
# APNs tokens are 32 bytes today; Apple warns they may grow, so accept up to 100 bytes.
APNS_TOKEN_MIN_HEX_CHARS = 64
APNS_TOKEN_MAX_HEX_CHARS = 200
APNS_TOKEN_PATTERN = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
WEBPUSH_ENDPOINT_MAX_CHARS = 2048
P256_UNCOMPRESSED_POINT_BYTES = 65
WEBPUSH_AUTH_SECRET_BYTES = 16  # RFC 8291 §3.2
# Refusals that WEBPUSH_ALLOW_PRIVATE_ENDPOINTS lifts (plain http:// is one of them).
PRIVATE_ENDPOINT_CODES = frozenset({"PRIVATE_ADDRESS", "INSECURE_SCHEME"})


def clean_fcm_token(token: str) -> str:
    token = token.strip()
    if not token:
        raise ValidationError("This field may not be blank.")
    if len(token) > FCM_TOKEN_MAX_CHARS:
        raise ValidationError(f"An FCM token has at most {FCM_TOKEN_MAX_CHARS} characters.")
    if not FCM_TOKEN_PATTERN.match(token):
        raise ValidationError("An FCM token has only letters, digits and the characters _-:.")
    return token


def clean_apns_token(token: str) -> str:
    token = token.strip().replace(" ", "")
    if not APNS_TOKEN_PATTERN.match(token) or not (
        APNS_TOKEN_MIN_HEX_CHARS <= len(token) <= APNS_TOKEN_MAX_HEX_CHARS
    ):
        raise ValidationError(
            f"An APNs device token is hexadecimal, {APNS_TOKEN_MIN_HEX_CHARS} characters (32 bytes) or more."
        )
    return token.lower()


def decode_base64url(value: str) -> bytes:
    value = value.strip()
    if not re.fullmatch(r"[A-Za-z0-9_\-+/]*={0,2}", value):
        raise ValueError("not base64url")
    padded = value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4)
    return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))


def clean_p256dh(value: str) -> str:
    try:
        raw = decode_base64url(value)
        if len(raw) != P256_UNCOMPRESSED_POINT_BYTES:
            raise ValueError("wrong length")
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except (ValueError, binascii.Error):
        raise ValidationError(
            "p256dh must be the base64url encoding of an uncompressed P-256 public point (65 bytes)."
        ) from None
    return value.strip()


def clean_auth_secret(value: str) -> str:
    try:
        raw = decode_base64url(value)
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != WEBPUSH_AUTH_SECRET_BYTES:
        raise ValidationError("auth must be the base64url encoding of a 16-byte secret.")
    return value.strip()


def clean_webpush_endpoint(endpoint: str) -> str:
    """The endpoint in canonical form; where it may point is notifyproject.outbound's rule."""
    endpoint = endpoint.strip()
    if len(endpoint) > WEBPUSH_ENDPOINT_MAX_CHARS:
        raise ValidationError(f"The endpoint has at most {WEBPUSH_ENDPOINT_MAX_CHARS} characters.")
    allow_private = settings.WEBPUSH_ALLOW_PRIVATE_ENDPOINTS
    try:
        return clean_url(endpoint, allow_private=allow_private)
    except UnsafeURLError as exc:
        message = str(exc)
        if exc.code in PRIVATE_ENDPOINT_CODES:
            message += " Set WEBPUSH_ALLOW_PRIVATE_ENDPOINTS=1 to allow that."
        raise ValidationError(message, code=exc.code.lower()) from None
