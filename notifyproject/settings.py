"""Clarion settings, read from the environment (every variable: deploy/clarion.env.example).

Nothing set is the embedded default: SQLite, the in-memory channel layer and a Celery
worker with beat inside the web process (see notifyproject/embedded.py and
docs/architecture.md). `DATABASE_URL` and `REDIS_URL` switch to PostgreSQL and Redis.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {value!r}.") from None


def env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):  # NaN fails both comparisons
        raise ImproperlyConfigured(f"{name} must be a positive number of seconds, got {value!r}.")
    return seconds


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name, "").strip()
    return [part.strip() for part in value.split(",") if part.strip()] if value else default


DEBUG = env_flag("DEBUG")

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY to a long random string in production, "
            "or DEBUG=1 for local development (`make run` does that for you)."
        )
    SECRET_KEY = "clarion-insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])

INSTALLED_APPS = [
    "daphne",
    "notifyproject.console.site.ClarionAdminConfig",  # django.contrib.admin, with Clarion's site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "knox",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from this instance
    "django_celery_beat",
    "channels",
    "notifyproject.identities",
    "devices",
    "delivery",
    "realtime",
    "delivery.webhooks",
    "notifyproject.console",
]

MIDDLEWARE = [
    "notifyproject.api.ApiErrorShapeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "notifyproject.csp.ContentSecurityPolicyMiddleware",
    "notifyproject.staticfiles.AsyncCapableWhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "notifyproject.urls"
ASGI_APPLICATION = "notifyproject.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
# PostgreSQL connections come from a pool per process (psycopg_pool, Django's "pool" option):
# under ASGI each request's sync code runs in a thread of its own, and persistent per-thread
# connections pile up (a soak run reached PostgreSQL's 100-connection limit). A process then
# holds at most DB_POOL_MAX_SIZE connections and waits DB_POOL_TIMEOUT for one before failing
# with a 503. DB_POOL_MAX_SIZE=0 turns the pool off (e.g. behind PgBouncer) and falls back to
# per-thread connections kept DB_CONN_MAX_AGE seconds.
DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 10)
DB_POOL_TIMEOUT_SECS = env_int("DB_POOL_TIMEOUT", 5)
DB_CONN_MAX_AGE_SECS = env_int("DB_CONN_MAX_AGE", 60)
try:
    DATABASES = {
        "default": dj_database_url.parse(
            os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
            conn_max_age=DB_CONN_MAX_AGE_SECS,
            conn_health_checks=True,
        )
    }
except ValueError as exc:  # dj-database-url's UnknownSchemeError is a ValueError
    raise ImproperlyConfigured(
        f"DATABASE_URL is not a database URL ({exc}); e.g. postgres://user:password@host:5432/clarion"
    ) from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DB_POOL_MAX_SIZE > 0:
    # Checked at checkout, with a round trip only for a connection the server closed.
    import notifyproject.db_pool  # noqa: F401

    DATABASES["default"]["CONN_MAX_AGE"] = 0  # a closed connection goes back to the pool
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": DB_POOL_MAX_SIZE,
        "timeout": DB_POOL_TIMEOUT_SECS,
        "max_idle": 60,
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default serves requests and runs tasks from several threads of one
    # process; WAL and a busy timeout keep a writer from failing a concurrent reader.
    # IMMEDIATE: a transaction takes the write lock when it begins. A deferred one that read
    # first cannot wait for the lock once another thread has committed: SQLite fails it at
    # once ("database is locked"), and a fan-out failed that way waited for the sweeper.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer and Celery broker ---------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "").strip()
EMBEDDED = not REDIS_URL

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                # redis-py's default pool (100 connections, 5 s read timeout) breaks under a
                # few thousand sockets.
                "hosts": [{"address": REDIS_URL, "max_connections": 1000, "socket_timeout": None}],
            },
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    # Redis redelivers an unacked task after this long; our sweeper recovers sooner, and no
    # countdown we schedule is longer (long waits live in the database, not the broker).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 600}
    # Throttle counters live in Redis so limits hold across web instances.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # Shared by every request of the process (notifyproject/cache.py).
            "OPTIONS": {"pool_class": "notifyproject.cache.SharedConnectionPool"},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CELERY_BROKER_URL = "memory://localhost/"  # kombu warns on every connect without a host
    # The in-memory transport polls; 50 ms keeps task latency low at ~20 idle wake-ups/s.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"polling_interval": 0.05}

CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "notifyproject.beat:ResilientDatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Enqueueing runs on commit inside a request; if Redis is down it must fail fast (the row is
# committed and the sweeper enqueues it later), not hold the request for Celery's defaults.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
# A send to at most this many recipients is fanned out by the process that accepted it,
# right after commit, instead of by a worker (saves the broker hop; 0 turns it off).
CLARION_INLINE_FANOUT_MAX = env_int("CLARION_INLINE_FANOUT_MAX", 10)
# Whether the ASGI process starts its own worker and beat (the embedded default only).
CLARION_EMBEDDED_WORKER = env_flag("CLARION_EMBEDDED_WORKER", EMBEDDED)

# --- Authentication -------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

REST_KNOX = {
    # Tokens from /api/v1/auth/token/ last 30 days; client tokens carry their own ttl.
    "TOKEN_TTL": timedelta(days=30),
    "AUTH_HEADER_PREFIX": "Token",
    "TOKEN_PREFIX": "ct_",
}
# Upper bound for the `ttl` of a minted client token: one year, in seconds.
CLIENT_TOKEN_MAX_TTL_SECS = 365 * 24 * 3600
CLIENT_TOKEN_DEFAULT_TTL_SECS = 24 * 3600

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # The first class's header names the 401 challenge (WWW-Authenticate: Token).
        "notifyproject.identities.authentication.EndUserTokenAuthentication",
        "notifyproject.identities.authentication.ApiKeyAuthentication",
        "notifyproject.api.CsrfSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["notifyproject.strict_json.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "notifyproject.openapi.ClarionAutoSchema",
    "DEFAULT_PAGINATION_CLASS": "notifyproject.api.CursorPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "notifyproject.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

# Seconds between re-checks of open realtime streams' tokens: a stream whose token expired or
# was revoked ends at the next check. Unset: 30 (realtime.node.TOKEN_RECHECK_SECS).
CLARION_TOKEN_RECHECK_SECS = float(os.environ.get("CLARION_TOKEN_RECHECK_SECS") or 0) or None
# Tests shorten how long a client that heartbeats may stay silent before it is closed (4408).
# Unset: 50 (realtime.node.HEARTBEAT_TIMEOUT_SECS).
CLARION_HEARTBEAT_TIMEOUT_SECS = float(os.environ.get("CLARION_HEARTBEAT_TIMEOUT_SECS") or 0) or None

# WebSocket handshake admission per web process (realtime/admission.py): past this many
# handshakes in progress, or this much event-loop lag, new handshakes are refused at once with
# 503 and Retry-After instead of queueing. 0 turns a bound off. A handshake costs ~1 ms of
# CPU, so 1,000 in progress is about a second of work. The lag bound is off by default: on a
# machine whose cores are shared, a process waiting for a core lags too, and refusing then only
# delays the clients (W4 at 10,000 on the loaded benchmark machine, docs/benchmarks.md).
CLARION_WS_MAX_PENDING_HANDSHAKES = env_int("CLARION_WS_MAX_PENDING_HANDSHAKES", 1000)
CLARION_WS_MAX_LOOP_LAG_MS = env_int("CLARION_WS_MAX_LOOP_LAG_MS", 0)

# Rate limits (DRF syntax "N/s|min|hour|day"); see notifyproject/throttling.py.
# Password guessing: a person signs in a few times a day, not 20 times a minute.
CLARION_LOGIN_RATE = os.environ.get("CLARION_LOGIN_RATE", "20/min")
# Sends per API key: 50/s sustained covers chatty backends; a broadcast is one send.
CLARION_SEND_RATE = os.environ.get("CLARION_SEND_RATE", "3000/min")
# Device registrations per end user: apps register on start and on token refresh.
CLARION_REGISTRATION_RATE = os.environ.get("CLARION_REGISTRATION_RATE", "60/hour")
# Client tokens minted per API key: a backend mints one per user sign-in; 10/s sustained.
CLARION_CLIENT_TOKEN_RATE = os.environ.get("CLARION_CLIENT_TOKEN_RATE", "600/min")
# Failed password sign-ins (admin login page, /api/v1/auth/token/) per client address and per
# username within the window; past it, sign-ins are refused until the window ends.
CLARION_SIGNIN_FAILURE_LIMIT = env_int("CLARION_SIGNIN_FAILURE_LIMIT", 10)
CLARION_SIGNIN_FAILURE_WINDOW_SECS = env_int("CLARION_SIGNIN_FAILURE_WINDOW_SECS", 15 * 60)
# Reverse proxies in front of the web processes that each append the address they received
# the request from to X-Forwarded-For. 0 (default): the header is ignored and limits count
# against the socket peer; N: the N-th address from the right is the client. Anything left of
# that was written by the client. See docs/security.md.
CLARION_TRUSTED_PROXIES = env_int("CLARION_TRUSTED_PROXIES", 0)
REST_FRAMEWORK["NUM_PROXIES"] = CLARION_TRUSTED_PROXIES  # DRF's own throttles agree with ours

SPECTACULAR_SETTINGS = {
    "TITLE": "Clarion API",
    "DESCRIPTION": "Self-hosted push notifications: realtime, FCM, APNs and Web Push.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Swagger UI from drf-spectacular-sidecar's static files, not a public CDN at @latest.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Operation ids, auth, errors and the realtime endpoints: notifyproject/openapi.py.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "notifyproject.openapi.add_realtime_paths",
    ],
}

# Request bodies, in bytes: a device or a send is a few KB; 256 KB leaves room without inviting
# abuse. Larger bodies are refused with 413 before they are read (notifyproject/request_guards.py,
# notifyproject/daphne_body_limit.py), whatever their declared or actual length.
CLARION_MAX_BODY_BYTES = env_int("CLARION_MAX_BODY_BYTES", 256 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = CLARION_MAX_BODY_BYTES

# --- Push providers (configured in later modules; read here so one place lists them) ----
FCM_CREDENTIALS = os.environ.get("FCM_CREDENTIALS", "")
FCM_ENDPOINT = os.environ.get("FCM_ENDPOINT", "https://fcm.googleapis.com").rstrip("/")
APNS_KEY = os.environ.get("APNS_KEY", "")
APNS_KEY_ID = os.environ.get("APNS_KEY_ID", "")
APNS_TEAM_ID = os.environ.get("APNS_TEAM_ID", "")
APNS_TOPIC = os.environ.get("APNS_TOPIC", "")
APNS_ENDPOINT = os.environ.get("APNS_ENDPOINT", "https://api.push.apple.com").rstrip("/")
APNS_SANDBOX_ENDPOINT = os.environ.get("APNS_SANDBOX_ENDPOINT", "https://api.sandbox.push.apple.com").rstrip(
    "/"
)
APNS_CA_BUNDLE = os.environ.get("APNS_CA_BUNDLE", "")
VAPID_PRIVATE_KEY = os.environ.get("VAPID_PRIVATE_KEY", "")
VAPID_PUBLIC_KEY = os.environ.get("VAPID_PUBLIC_KEY", "")
VAPID_SUBJECT = os.environ.get("VAPID_SUBJECT", "")
WEBPUSH_ALLOW_PRIVATE_ENDPOINTS = env_flag("WEBPUSH_ALLOW_PRIVATE_ENDPOINTS")
# Fernet keys (comma-separated) that encrypt apps' stored push credentials: the first encrypts,
# all decrypt (rotation, docs/apps.md). Unset: DEBUG derives a development key from SECRET_KEY;
# otherwise storing credentials is refused.
CLARION_ENCRYPTION_KEYS = env_list("CLARION_ENCRYPTION_KEYS", [])

CLARION_ACK_TIMEOUT_SECS = env_int("CLARION_ACK_TIMEOUT", 10)

# Webhooks (docs/webhooks.md). `1` lets webhook URLs point at loopback/private addresses or
# http:// (registration and every connect are checked otherwise); off by default.
WEBHOOK_ALLOW_PRIVATE_URLS = env_flag("WEBHOOK_ALLOW_PRIVATE_URLS")
# Seconds an endpoint has to answer one POST before the attempt counts as failed (the contract's 10).
CLARION_WEBHOOK_TIMEOUT_SECS = float(os.environ.get("CLARION_WEBHOOK_TIMEOUT", "10"))
# First retry wait in seconds; each further one doubles (jittered, capped at 2 h), for 24 h.
CLARION_WEBHOOK_RETRY_BASE_SECS = float(os.environ.get("CLARION_WEBHOOK_RETRY_BASE", "5"))
# Events `sending` this long belong to a dead worker and are sent again (an attempt takes at
# most the timeout above plus a few seconds).
CLARION_WEBHOOK_SENDING_STALE_SECS = env_int("CLARION_WEBHOOK_SENDING_STALE_SECS", 120)

# One provider per platform, by import path (tests and deployments swap them here).
CLARION_PROVIDERS = {
    "fcm": "delivery.providers.fcm.FcmProvider",
    "apns": "delivery.providers.apns.ApnsProvider",
    "webpush": "delivery.providers.webpush.WebPushProvider",
}
if os.environ.get("CLARION_PROVIDERS"):
    import json

    CLARION_PROVIDERS = {**CLARION_PROVIDERS, **json.loads(os.environ["CLARION_PROVIDERS"])}

# Delivery policy. Attempts per push delivery before it is marked failed.
CLARION_MAX_ATTEMPTS = env_int("CLARION_MAX_ATTEMPTS", 5)
# Retry back-off: full jitter over min(cap, base * 2**attempt); 2 s base, 5 min cap.
CLARION_RETRY_BASE_SECS = env_int("CLARION_RETRY_BASE_SECS", 2)
CLARION_RETRY_CAP_SECS = env_int("CLARION_RETRY_CAP_SECS", 300)
# Work enqueued this long ago but not done (a worker died) is enqueued again by the sweeper.
CLARION_STALE_WORK_SECS = env_int("CLARION_STALE_WORK_SECS", 30)
# Deliveries `sending` this long belong to a dead worker (provider calls time out far sooner).
CLARION_SENDING_STALE_SECS = env_int("CLARION_SENDING_STALE_SECS", 300)
# On PostgreSQL, fan-out rows are written set-based (INSERT … SELECT) rather than built in
# Python; 0 keeps the ORM path (SQLite always uses it). bench/pipeline.py compares the two.
CLARION_FANOUT_BULK = env_flag("CLARION_FANOUT_BULK", True)
_FANOUT_SET_BASED = CLARION_FANOUT_BULK and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
# Recipients per fan-out transaction: set-based writes make a batch's fixed cost (row lock,
# order check, commit, quiet-hours read) the larger share, so they take bigger batches.
CLARION_FANOUT_BATCH = env_int("CLARION_FANOUT_BATCH", 2000 if _FANOUT_SET_BASED else 500)
# How often beat runs the sweeper (scheduled sends, retries, recovery, expiry, webhook retries), in seconds.
CLARION_SWEEP_INTERVAL_SECS = env_seconds("CLARION_SWEEP_INTERVAL", 1.0)
# Data lifecycle: delivery rows older than this are deleted; devices unseen this long are deactivated.
CLARION_RETENTION_DAYS = env_int("CLARION_RETENTION_DAYS", 30)
CLARION_STALE_DEVICE_DAYS = env_int("CLARION_STALE_DEVICE_DAYS", 60)
CELERY_BEAT_SCHEDULE = {
    "clarion-sweep": {"task": "delivery.tasks.due_work_sweep", "schedule": CLARION_SWEEP_INTERVAL_SECS},
    "clarion-retention": {"task": "delivery.tasks.data_retention_sweep", "schedule": 3600.0},
}

# /metrics is open unless this is set; then Prometheus must send it as a Bearer token.
CLARION_METRICS_TOKEN = os.environ.get("CLARION_METRICS_TOKEN", "")

# --- Internationalisation, static files -----------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Set STATIC_ROOT (and run collectstatic) in production; unset, files come from the finders.
STATIC_ROOT = os.environ.get("STATIC_ROOT") or None
# Served by WhiteNoise from the finders in development and tests, no collectstatic needed.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "/admin/login/"
# Database sessions that ignore a cookie no session could have (a NUL in it reached PostgreSQL).
SESSION_ENGINE = "notifyproject.sessions"

if not DEBUG:
    SESSION_COOKIE_SECURE = env_flag("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_flag("CSRF_COOKIE_SECURE", True)
    CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])


def env_proxy_ssl_header(name: str, default: tuple[str, str] | None) -> tuple[str, str] | None:
    """`Header-Name: value` as Django's (META key, value) pair; `off` for none."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if value.lower() == "off":
        return None
    header, separator, expected = value.partition(":")
    if not separator or not header.strip() or not expected.strip():
        raise ImproperlyConfigured(
            f"{name} must look like 'X-Forwarded-Proto: https' or be 'off', got {value!r}."
        )
    return ("HTTP_" + header.strip().upper().replace("-", "_"), expected.strip())


# --- HTTPS (docs/security.md, Input limits and browser hardening) ------------------------
# The request header (and its value) by which the reverse proxy in front says the client used
# HTTPS. Trust it only behind a proxy that always sets or strips it. Default outside DEBUG:
# `X-Forwarded-Proto: https`; `off` disables it.
SECURE_PROXY_SSL_HEADER = env_proxy_ssl_header(
    "SECURE_PROXY_SSL_HEADER", None if DEBUG else ("HTTP_X_FORWARDED_PROTO", "https")
)
# 1: redirect plain-HTTP requests to HTTPS (default off: usually the proxy does it). Health and
# metrics stay reachable over HTTP for probes inside the network.
SECURE_SSL_REDIRECT = env_flag("SECURE_SSL_REDIRECT")
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
# Strict-Transport-Security max-age in seconds (default 0: no header). Browsers then refuse
# plain HTTP to this host for that long: set it once HTTPS works, e.g. 31536000 (a year).
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_flag("SECURE_HSTS_INCLUDE_SUBDOMAINS")
SECURE_HSTS_PRELOAD = env_flag("SECURE_HSTS_PRELOAD")

# Content-Security-Policy of every HTML page (notifyproject/csp.py): scripts, styles, images and
# connections from this origin only, no plugins, no framing. The demo page, the API docs
# (Swagger UI served from this instance) and the admin need nothing more.
CLARION_CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            # Masks credentials in logged URLs (`?token=`), tracebacks included.
            "()": "notifyproject.logredact.RedactingFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    },
    "filters": {"housekeeping_at_debug": {"()": "notifyproject.logfilters.HousekeepingAtDebug"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        # Django logs every 4xx with the request line at WARNING; bodies and headers never.
        "django.request": {"level": "ERROR"},
        # Beat's, the worker's and the tracer's line per periodic task (the sweeper: every second).
        **{
            name: {"filters": ["housekeeping_at_debug"]}
            for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace")
        },
    },
}
