"""Rate limits, counted in the cache (Redis when REDIS_URL is set, so they hold across instances).

DRF's SimpleRateThrottle reads its rates once at import; these read settings per call, so a
deployment (or a test) can change them.
"""

import logging

import redis
from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from delivery.models import ApiKey

logger = logging.getLogger(__name__)


class _SettingsRateThrottle(SimpleRateThrottle):
    setting = ""

    def get_rate(self):
        return getattr(settings, self.setting)

    def allow_request(self, request, view):
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        try:
            return super().allow_request(request, view)
        except (redis.RedisError, OSError) as exc:
            # Fail open: while Redis is away a send must still be accepted (it is committed and
            # the sweeper enqueues it later); limiting resumes when the counters are back.
            logger.warning(
                "rate limit %s not enforced, cache unavailable: %s", self.scope, type(exc).__name__
            )
            return True


class SendRateThrottle(_SettingsRateThrottle):
    """Sends per API key (or per staff user): one runaway backend cannot flood every user."""

    scope = "send"
    setting = "CLARION_SEND_RATE"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiKey):
            ident = f"key:{request.auth.prefix}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class RegistrationRateThrottle(_SettingsRateThrottle):
    """Device registrations per end user: apps re-register on start, not hundreds of times."""

    scope = "register"
    setting = "CLARION_REGISTRATION_RATE"

    def get_cache_key(self, request, view):
        if request.method != "POST":
            return None
        ident = request.user.pk if request.user and request.user.is_authenticated else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class LoginRateThrottle(_SettingsRateThrottle):
    """Password sign-ins per client address: slows password guessing."""

    scope = "login"
    setting = "CLARION_LOGIN_RATE"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
