"""Clarion's settings plus the peers the provider benchmarks compare against (bench only).

django-push-notifications (`push_notifications`) and django-webpush (`webpush`) need their
apps and models; Clarion itself never installs them. See bench/requirements.txt.
"""

import os

from notifyproject.settings import *  # noqa: F403
from notifyproject.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "push_notifications", "webpush"]

# django-push-notifications: FCM through the default firebase-admin app (FIREBASE_APP None),
# which bench/providers_baseline.py points at the fake. Its default of 1,000 messages per
# send_each() call fails on firebase-admin 7.x ("must not contain more than 500 elements").
PUSH_NOTIFICATIONS_SETTINGS = {"FCM_MAX_RECIPIENTS": 500}

# django-webpush signs with pywebpush per message using these.
WEBPUSH_SETTINGS = {
    "VAPID_PUBLIC_KEY": os.environ.get("VAPID_PUBLIC_KEY", ""),
    "VAPID_PRIVATE_KEY": os.environ.get("VAPID_PRIVATE_KEY", ""),
    "VAPID_ADMIN_EMAIL": "ops@clarion.invalid",
}
