"""Writes for apps (several push credential sets in one instance); docs/apps.md.

Secrets are checked by building the real providers from them (no network I/O: a service
account is parsed, a key loaded) and stored encrypted (notifyproject/encryption.py).
"""

import contextlib

from django.core.exceptions import ValidationError
from django.db import transaction

from delivery.providers.credentials import AppCredentials
from devices.models import DEFAULT_APP, App
from notifyproject.encryption import decrypt, encrypt

SECRET_FIELDS = ("fcm_credentials", "apns_key", "vapid_private_key")
APNS_FIELDS = ("apns_key_id", "apns_team_id", "apns_topic", "apns_endpoint", "apns_sandbox_endpoint")
VAPID_FIELDS = ("vapid_public_key", "vapid_subject")
PLAIN_FIELDS = ("name", "fcm_endpoint", *APNS_FIELDS, *VAPID_FIELDS)


def app_credentials_problems(app: App, secrets: dict[str, str]) -> dict[str, str]:
    """Field → why a provider would not take these credentials; only platforms given any are judged."""
    # Imported here, not at the top: every process loads the admin (which imports this module),
    # and the provider SDKs take seconds to import on a busy machine.
    from delivery.providers.apns import ApnsProvider
    from delivery.providers.fcm import FcmProvider
    from delivery.providers.webpush import WebPushProvider

    creds = AppCredentials(
        app=app.slug or "new",
        fcm_credentials_json=secrets.get("fcm_credentials", ""),
        fcm_endpoint=app.fcm_endpoint,
        apns_key_pem=secrets.get("apns_key", ""),
        apns_key_id=app.apns_key_id,
        apns_team_id=app.apns_team_id,
        apns_topic=app.apns_topic,
        apns_endpoint=app.apns_endpoint,
        apns_sandbox_endpoint=app.apns_sandbox_endpoint,
        vapid_private_key=secrets.get("vapid_private_key", ""),
        vapid_public_key=app.vapid_public_key,
        vapid_subject=app.vapid_subject,
    )
    problems = {}
    platforms = (
        ("fcm_credentials", FcmProvider, creds.fcm_credentials_json),
        ("apns_key", ApnsProvider, creds.apns_key_pem or any(getattr(app, f) for f in APNS_FIELDS[:3])),
        (
            "vapid_private_key",
            WebPushProvider,
            creds.vapid_private_key or any(getattr(app, f) for f in VAPID_FIELDS),
        ),
    )
    for field, provider_class, given in platforms:
        if not given:
            continue
        provider = provider_class(creds)
        reason = provider.not_configured_reason()
        provider.close()  # nothing was started; releases what the constructor made
        if reason:
            problems[field] = reason
    return problems


def app_secrets(app: App) -> dict[str, str]:
    """The stored secrets, decrypted (for re-checking an edited app)."""
    return {field: decrypt(getattr(app, field)) for field in SECRET_FIELDS}


def app_validate(app: App, secrets: dict[str, str | None]) -> None:
    """ValidationError (by field) for a bad slug or credentials a provider would refuse.

    `secrets`: None keeps the stored one, "" removes it. Fills in a missing VAPID public key.
    """
    if app.slug == DEFAULT_APP:
        raise ValidationError(
            {"slug": ["The default app is defined by the environment (FCM_*, APNS_*, VAPID_*)."]}
        )
    current = app_secrets(app) if app.pk else dict.fromkeys(SECRET_FIELDS, "")
    plain = {
        field: current[field] if secrets.get(field) is None else secrets[field] for field in SECRET_FIELDS
    }
    if plain["vapid_private_key"] and not app.vapid_public_key:
        from delivery.providers.webpush import load_vapid_private_key, vapid_public_key

        with contextlib.suppress(ValueError):  # a bad key is reported by the provider check below
            app.vapid_public_key = vapid_public_key(load_vapid_private_key(plain["vapid_private_key"]))
    app.full_clean(exclude=[*SECRET_FIELDS])
    problems = app_credentials_problems(app, plain)
    if problems:
        raise ValidationError({field: [reason] for field, reason in problems.items()})


def app_save(*, app: App, secrets: dict[str, str | None]) -> App:
    """Validate, encrypt the given secrets (None keeps the stored one, "" removes it) and save.

    Raises ValidationError as app_validate, and EncryptionKeyMissingError when there is no key
    to encrypt with outside DEBUG.
    """
    app_validate(app, secrets)
    for field in SECRET_FIELDS:
        if secrets.get(field) is not None:
            setattr(app, field, encrypt(secrets[field]))
    with transaction.atomic():
        app.save()
    return app


def app_create(*, slug: str, secrets: dict[str, str], **fields: str) -> App:
    """A new app from PLAIN_FIELDS and plain secrets, validated and encrypted by app_save.

    A secret given as a field would be stored unencrypted, so any name outside PLAIN_FIELDS is refused.
    """
    unknown = set(fields) - set(PLAIN_FIELDS)
    if unknown:
        raise TypeError(f"not plain App fields (secrets go in `secrets`): {', '.join(sorted(unknown))}")
    return app_save(app=App(slug=slug, **fields), secrets=secrets)


def app_credentials_reencrypt() -> int:
    """Rewrite every stored secret under the first CLARION_ENCRYPTION_KEYS key; returns apps rewritten."""
    from notifyproject.encryption import reencrypt

    count = 0
    for app in App.objects.all():
        for field in SECRET_FIELDS:
            setattr(app, field, reencrypt(getattr(app, field)))
        # update_fields without updated_at: the credentials did not change, providers need no rebuild.
        App.objects.filter(pk=app.pk).update(**{field: getattr(app, field) for field in SECRET_FIELDS})
        count += 1
    return count
