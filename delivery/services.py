"""Writes for sending: API keys, notifications and deliveries."""

from delivery.models import ApiKey


def api_key_create(*, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """Create a key; the returned plaintext is the only copy there will ever be."""
    return ApiKey.objects.create_key(name=name, scopes=sorted(set(scopes)))
