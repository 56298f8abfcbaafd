"""Rate limits, counted in the cache (Redis when REDIS_URL is set, so they hold across instances).

DRF's SimpleRateThrottle reads its rates once at import; these read settings per call, so a
deployment (or a test) can change them. With Redis, a limit is DRF's sliding window of request
times kept as a sorted set and checked by one script: one round trip, where DRF's cache-backed
history is a GET and a SET of the whole pickled list (at 3,000 sends a minute, a 3,000-float
list both ways on every send). Limits per address use `client_address`, which trusts
X-Forwarded-For only as far as the operator said proxies are in front (CLARION_TRUSTED_PROXIES).
See docs/security.md (Identities, tokens and throttles).
"""

import hashlib
import logging
import secrets
import threading

import redis
from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.throttling import SimpleRateThrottle

from notifyproject.cache import SharedConnectionPool
from notifyproject.identities.models import ApiKey

logger = logging.getLogger(__name__)


def client_address(request) -> str:
    """The address limits count against: the socket peer, or the hop the outermost trusted proxy saw.

    Each trusted proxy appends the address it received the request from to X-Forwarded-For, so
    with N of them the client is the N-th entry from the right; anything further left was written
    by the client and is ignored. With none trusted (the default) the header is ignored entirely.
    """
    peer = request.META.get("REMOTE_ADDR") or ""
    trusted = settings.CLARION_TRUSTED_PROXIES
    if trusted <= 0:
        return peer
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    return hops[-min(trusted, len(hops))] if hops else peer


# KEYS[1]: the limit's sorted set of request times. ARGV: now, window secs, limit, a unique member.
# Returns -1 when the request is allowed (and recorded), else the seconds until the oldest
# request in the window leaves it (DRF's wait() for a full window).
_SLIDING_WINDOW_SCRIPT = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('EXPIRE', KEYS[1], math.ceil(window))
  return '-1'
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tostring(window - (now - tonumber(oldest[2])))
"""
_script_lock = threading.Lock()
_scripts: dict = {}  # Redis URL → registered script on the process's shared pool


def _sliding_window_script():
    """The registered script when the cache is Redis (counters shared by every instance), else None."""
    default_cache = caches["default"]
    if not isinstance(default_cache, RedisCache):
        return None
    url = default_cache._servers[0]
    with _script_lock:
        script = _scripts.get(url)
        if script is None:
            client = redis.Redis(connection_pool=SharedConnectionPool.from_url(url))
            script = _scripts[url] = client.register_script(_SLIDING_WINDOW_SCRIPT)
        return script


class _SettingsRateThrottle(SimpleRateThrottle):
    setting = ""

    def get_rate(self):
        return getattr(settings, self.setting)

    def get_ident(self, request):
        return client_address(request)

    def allow_request(self, request, view):
        self._read_rate()
        try:
            script = _sliding_window_script()
            if script is None or self.rate is None:
                return super().allow_request(request, view)
            key = self.get_cache_key(request, view)
            return True if key is None else self._allowed_by_script(script, key)
        except (redis.RedisError, OSError) as exc:
            return self._fail_open(exc)

    def allow_key(self, key: str) -> bool | None:
        """allow_request for a request whose cache key is known, without a DRF request; None
        where only allow_request can tell (no Redis: DRF's history in the cache)."""
        self._read_rate()
        try:
            script = _sliding_window_script()
            if script is None:
                return None
            return True if self.rate is None else self._allowed_by_script(script, key)
        except (redis.RedisError, OSError) as exc:
            return self._fail_open(exc)

    def _read_rate(self) -> None:
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        self.retry_after = None

    def _allowed_by_script(self, script, key: str) -> bool:
        self.now = self.timer()
        member = f"{self.now:.6f}:{secrets.token_hex(4)}"
        limits = [self.now, self.duration, self.num_requests, member]
        wait = float(script(keys=[f"clarion:{key}"], args=limits))
        if wait < 0:
            return True
        self.retry_after = max(wait, 0.0)
        return False

    def _fail_open(self, exc: Exception) -> bool:
        # Fail open: while Redis is away a send must still be accepted (it is committed and
        # the sweeper enqueues it later); limiting resumes when the counters are back.
        logger.warning("rate limit %s not enforced, cache unavailable: %s", self.scope, type(exc).__name__)
        return True

    def wait(self):
        return self.retry_after if self.retry_after is not None else super().wait()


class SendRateThrottle(_SettingsRateThrottle):
    """Sends per API key (or per staff user): one runaway backend cannot flood every user."""

    scope = "send"
    setting = "CLARION_SEND_RATE"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiKey):
            return self.key_of_api_key(request.auth)
        if request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def key_of_api_key(self, api_key: ApiKey) -> str:
        return self.cache_format % {"scope": self.scope, "ident": f"key:{api_key.prefix}"}


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


class ClientTokenRateThrottle(_SettingsRateThrottle):
    """Client tokens minted per API key (or per staff user): a leaked send key cannot mint en masse."""

    scope = "client_token"
    setting = "CLARION_CLIENT_TOKEN_RATE"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiKey):
            ident = f"key:{request.auth.prefix}"
        else:
            ident = f"user:{request.user.pk}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


# -- failed password sign-ins (the admin's login page and POST /api/v1/auth/token/) -----------

SIGNIN_BLOCKED_MESSAGE = (
    "Too many failed sign-ins for this account or from this address. Try again in {minutes} minutes."
)


def _signin_failure_keys(request, username: str) -> list[str]:
    # Hashed: cache keys stay short and printable whatever a username contains.
    user_digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()
    return [
        f"throttle_signin_failures_addr_{client_address(request)}",
        f"throttle_signin_failures_user_{user_digest}",
    ]


def signin_blocked_message(request, username: str) -> str | None:
    """Why this sign-in is refused before its password is checked, or None when it may go ahead.

    Blocked when the address or the username has CLARION_SIGNIN_FAILURE_LIMIT failures within
    the last window: per address stops one client guessing many accounts, per username stops
    many addresses guessing one (at the price that they can hold that account's sign-in off).
    """
    try:
        counts = cache.get_many(_signin_failure_keys(request, username))
    except (redis.RedisError, OSError) as exc:
        logger.warning("sign-in failure limit not enforced, cache unavailable: %s", type(exc).__name__)
        return None
    if max(counts.values(), default=0) < settings.CLARION_SIGNIN_FAILURE_LIMIT:
        return None
    return SIGNIN_BLOCKED_MESSAGE.format(minutes=max(1, settings.CLARION_SIGNIN_FAILURE_WINDOW_SECS // 60))


def signin_failed(request, username: str) -> None:
    """Count a failed sign-in against its address and its username, for one window."""
    try:
        for key in _signin_failure_keys(request, username):
            cache.add(key, 0, timeout=settings.CLARION_SIGNIN_FAILURE_WINDOW_SECS)
            cache.incr(key)
    except (redis.RedisError, OSError, ValueError) as exc:  # ValueError: the key expired in between
        logger.warning("sign-in failure not counted: %s", type(exc).__name__)
