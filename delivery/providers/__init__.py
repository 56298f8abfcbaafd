"""Push providers, one module per platform, chosen by import path in CLARION_PROVIDERS.

A provider class is built lazily, once per process and (app, platform): with no arguments for
the `default` app (the environment's credentials), with the app's AppCredentials for a stored
app. It exposes `configured()` / `not_configured_reason()`; see base.PushProvider for `send`.
An app's providers are rebuilt when its row changes (its `updated_at` moves).
"""

import logging
import threading

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from delivery.providers.base import Outcome, PushMessage, PushOptions, PushProvider, PushTarget, SendResult
from delivery.providers.credentials import DEFAULT_APP
from notifyproject.encryption import DecryptionError, EncryptionKeyMissingError

__all__ = [
    "Outcome",
    "PushMessage",
    "PushOptions",
    "PushProvider",
    "PushTarget",
    "SendResult",
    "get_provider",
]

logger = logging.getLogger(__name__)

# (app slug, platform) -> (the app row's updated_at when built, provider)
_instances: dict[tuple[str, str], tuple[object, object]] = {}
_lock = threading.Lock()


def get_provider(platform: str, app=None) -> tuple[PushProvider | None, str]:
    """(provider, "") when `platform` can send for `app` (a devices.App; None is the default app),
    else (None, the reason it cannot)."""
    path = settings.CLARION_PROVIDERS.get(platform)
    if not path:
        return None, f"no provider for platform {platform!r}"
    key = (app.slug if app is not None else DEFAULT_APP, platform)
    version = app.updated_at if app is not None else None
    stale = None
    with _lock:
        cached = _instances.get(key)
        if cached is not None and cached[0] == version:
            provider = cached[1]
        else:
            try:
                provider = _build(path, app)
            except (DecryptionError, EncryptionKeyMissingError) as exc:
                logger.warning("cannot build the %s provider for app %s: %s", platform, key[0], exc)
                return None, f"{platform} provider is not configured for app {key[0]!r}: {exc}"
            stale = cached[1] if cached is not None else None
            _instances[key] = (version, provider)
    if stale is not None:
        _close(stale)
    reason = provider.not_configured_reason()
    return (None, reason) if reason else (provider, "")


def _build(path: str, app):
    provider_class = import_string(path)
    if app is None:
        return provider_class()
    from delivery.providers.credentials import AppCredentials

    return provider_class(AppCredentials.from_app(app))


def _close(provider) -> None:
    close = getattr(provider, "close", None)
    if close:
        close()


def reset_providers() -> None:
    """Forget built providers (settings changed, or a test swapped them)."""
    with _lock:
        built = [provider for _version, provider in _instances.values()]
        _instances.clear()
    for provider in built:
        _close(provider)


def _on_setting_changed(setting, **kwargs):
    if setting in ("CLARION_PROVIDERS", "CLARION_ENCRYPTION_KEYS") or setting.startswith(
        ("FCM_", "APNS_", "VAPID_")
    ):
        reset_providers()


setting_changed.connect(_on_setting_changed)
