"""Minting API keys for product backends (the admin and `manage.py create_api_key` call this)."""

from notifyproject.identities.models import ApiKey


def api_key_create(*, name: str, scopes: list[str], app: str = "") -> tuple[ApiKey, str]:
    """Create a key (bound to `app` if given); the returned plaintext is the only copy there will be."""
    return ApiKey.objects.create_key(name=name, scopes=sorted(set(scopes)), app=app)
