"""One app's push credentials as the providers take them: from the environment or an App row.

The `default` app is the environment's FCM_*, APNS_* and VAPID_* variables (files named by
path); other apps are devices.App rows whose secrets are decrypted here, in memory only.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from notifyproject.encryption import decrypt

# The environment-defined app; devices.models.DEFAULT_APP names the same (providers do not import
# the devices app, so it is spelled here too; tests/delivery/providers/test_apps.py checks both).
DEFAULT_APP = "default"


@dataclass(frozen=True)
class AppCredentials:
    app: str = DEFAULT_APP
    fcm_credentials_path: str = ""  # the default app: a service-account JSON file
    fcm_credentials_json: str = ""  # a stored app: its content
    fcm_endpoint: str = ""
    apns_key_path: str = ""
    apns_key_pem: str = ""
    apns_key_id: str = ""
    apns_team_id: str = ""
    apns_topic: str = ""
    apns_endpoint: str = ""
    apns_sandbox_endpoint: str = ""
    apns_ca_bundle: str = ""
    vapid_private_key: str = ""
    vapid_public_key: str = ""
    vapid_subject: str = ""

    @property
    def is_default(self) -> bool:
        return self.app == DEFAULT_APP

    @classmethod
    def from_settings(cls) -> AppCredentials:
        return cls(
            fcm_credentials_path=settings.FCM_CREDENTIALS,
            fcm_endpoint=settings.FCM_ENDPOINT,
            apns_key_path=settings.APNS_KEY,
            apns_key_id=settings.APNS_KEY_ID,
            apns_team_id=settings.APNS_TEAM_ID,
            apns_topic=settings.APNS_TOPIC,
            apns_endpoint=settings.APNS_ENDPOINT,
            apns_sandbox_endpoint=settings.APNS_SANDBOX_ENDPOINT,
            apns_ca_bundle=settings.APNS_CA_BUNDLE,
            vapid_private_key=settings.VAPID_PRIVATE_KEY,
            vapid_public_key=settings.VAPID_PUBLIC_KEY,
            vapid_subject=settings.VAPID_SUBJECT,
        )

    @classmethod
    def from_app(cls, app) -> AppCredentials:
        """A stored app's (a devices.models.App row) credentials, decrypted; endpoints it leaves
        empty are the instance's."""
        return cls(
            app=app.slug,
            fcm_credentials_json=decrypt(app.fcm_credentials),
            fcm_endpoint=(app.fcm_endpoint or settings.FCM_ENDPOINT).rstrip("/"),
            apns_key_pem=decrypt(app.apns_key),
            apns_key_id=app.apns_key_id,
            apns_team_id=app.apns_team_id,
            apns_topic=app.apns_topic,
            apns_endpoint=(app.apns_endpoint or settings.APNS_ENDPOINT).rstrip("/"),
            apns_sandbox_endpoint=(app.apns_sandbox_endpoint or settings.APNS_SANDBOX_ENDPOINT).rstrip("/"),
            apns_ca_bundle=settings.APNS_CA_BUNDLE,
            vapid_private_key=decrypt(app.vapid_private_key),
            vapid_public_key=app.vapid_public_key,
            vapid_subject=app.vapid_subject,
        )

    def label(self) -> str:
        """How a not-configured reason names this app."""
        return "" if self.is_default else f" for app {self.app!r}"
