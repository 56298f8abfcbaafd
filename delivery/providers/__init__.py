"""Push providers, one module per platform, chosen by import path in CLARION_PROVIDERS.

A provider class is built once per process (lazily, on first use) with no arguments and
exposes `configured()` / `not_configured_reason()`; see base.PushProvider for `send`.
"""

import threading

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from delivery.providers.base import Outcome, PushMessage, PushOptions, PushProvider, PushTarget, SendResult

__all__ = [
    "Outcome",
    "PushMessage",
    "PushOptions",
    "PushProvider",
    "PushTarget",
    "SendResult",
    "get_provider",
]

_instances: dict[str, object] = {}
_lock = threading.Lock()


def get_provider(platform: str) -> tuple[PushProvider | None, str]:
    """(provider, "") when `platform` can send, else (None, reason it cannot)."""
    path = settings.CLARION_PROVIDERS.get(platform)
    if not path:
        return None, f"no provider for platform {platform!r}"
    with _lock:
        provider = _instances.get(platform)
        if provider is None:
            provider = _instances[platform] = import_string(path)()
    reason = provider.not_configured_reason()
    return (None, reason) if reason else (provider, "")


def reset_providers() -> None:
    """Forget built providers (settings changed, or a test swapped them)."""
    with _lock:
        for provider in _instances.values():
            close = getattr(provider, "close", None)
            if close:
                close()
        _instances.clear()


def _on_setting_changed(setting, **kwargs):
    if setting == "CLARION_PROVIDERS" or setting.startswith(("FCM_", "APNS_", "VAPID_")):
        reset_providers()


setting_changed.connect(_on_setting_changed)
