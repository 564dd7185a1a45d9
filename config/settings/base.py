"""Settings shared by every environment. Everything that differs comes from the environment.

With no environment set, Onramp runs on the *embedded default*: SQLite in WAL mode and a Celery
broker on kombu's filesystem transport (a folder under ``var/``), so web, worker and beat run as
separate processes without any server. ``DATABASE_URL`` and ``CELERY_BROKER_URL`` switch to the
production stack (PostgreSQL and Redis). docs/configuration.md lists every variable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_str
from config.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("ONRAMP_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "dashboard.admin_apps.OnrampAdminConfig",  # django.contrib.admin, login throttled
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "django_celery_beat",
    "onboarding",
    "dashboard",
    "triggers",
]

MIDDLEWARE = [
    "config.logs.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "dashboard.security.ContentSecurityPolicyMiddleware",
    "onboarding.api.middleware.TrackingApiMiddleware",
    "dashboard.security.RejectNulMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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


def _database_config() -> dict:
    url = env_str("DATABASE_URL")
    if url:
        config = dj_database_url.parse(url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60))
        config["CONN_HEALTH_CHECKS"] = True
        if config["ENGINE"] == "django.db.backends.postgresql":
            config.setdefault("OPTIONS", {})["connect_timeout"] = env_int(
                "DATABASE_CONNECT_TIMEOUT", 5
            )
        return config
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": env_str("ONRAMP_SQLITE_PATH", str(VAR_DIR / "onramp.sqlite3")),
        "OPTIONS": {
            # WAL lets web, worker and beat read while one of them writes; IMMEDIATE transactions
            # plus a busy timeout make concurrent writers wait instead of failing.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }


DATABASES = {"default": _database_config()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "config.staticfiles.PlotlyFinder",  # vendor/plotly.min.js from the installed plotly package
]
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles")))

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"

# --- Redis, cache and rate limits -------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery ------------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or "filesystem://"
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = VAR_DIR / "broker"
    (_broker_dir / "queue").mkdir(parents=True, exist_ok=True)
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
    (_broker_dir / "control").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    # Tasks must finish well inside the visibility timeout, or Redis redelivers them.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 300}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_TIME_LIMIT = 120
CELERY_TASK_SOFT_TIME_LIMIT = 100
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- Email -------------------------------------------------------------------------------------
EMAIL_HOST = env_str("EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
    EMAIL_PORT = env_int("EMAIL_PORT", 25)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
else:
    EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Onramp <onramp@localhost>")

# --- Tracking API ------------------------------------------------------------------------------
ONRAMP_MAX_EVENT_BYTES = 32 * 1024
ONRAMP_MAX_REQUEST_BYTES = 512 * 1024
ONRAMP_MAX_FUTURE_SECONDS = 24 * 3600
# Per write key: at most RATE_LIMIT_REQUESTS requests in each RATE_LIMIT_WINDOW seconds.
ONRAMP_RATE_LIMIT_REQUESTS = env_int("ONRAMP_RATE_LIMIT_REQUESTS", 1000)
ONRAMP_RATE_LIMIT_WINDOW = env_int("ONRAMP_RATE_LIMIT_WINDOW", 1)
ONRAMP_DB_UNAVAILABLE_RETRY_AFTER = 5
# Where browsers reach the tracking API, for the settings document analytics.js loads
# (``https://t.example.com`` or with a path prefix); empty: the scheme and host of each request.
ONRAMP_TRACKING_URL = env_str("ONRAMP_TRACKING_URL", "").strip()
if ONRAMP_TRACKING_URL and not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", ONRAMP_TRACKING_URL):
    raise ImproperlyConfigured(
        f"ONRAMP_TRACKING_URL must be an http:// or https:// URL, not {ONRAMP_TRACKING_URL!r}"
    )

ONRAMP_FAILED_EVENT_RETENTION_DAYS = env_int("ONRAMP_FAILED_EVENT_RETENTION_DAYS", 30)
# Events (PostgreSQL: monthly partitions of onboarding_event). Keep this many whole months before
# the current one; older partitions are dropped by the daily maintenance task. 0 = keep forever.
ONRAMP_EVENT_RETENTION_MONTHS = env_int("ONRAMP_EVENT_RETENTION_MONTHS", 0)
# Monthly partitions created ahead of the current month.
ONRAMP_EVENT_PARTITIONS_AHEAD = env_int("ONRAMP_EVENT_PARTITIONS_AHEAD", 3)
ONRAMP_DEFAULT_TIMEZONE = env_str("ONRAMP_DEFAULT_TIMEZONE", "UTC")
# An event received more than this long after it happened is late data: it never starts an
# event, repeated-failure, milestone or across-sessions rule (DESIGN §4.1; docs/guide-rules.md).
ONRAMP_LATE_EVENT_SECONDS = env_int("ONRAMP_LATE_EVENT_SECONDS", 600)

# --- Delivery (DESIGN §4.5) ----------------------------------------------------------------------
# The public URL of this Onramp, for links in emails (open pixel, click tracking, unsubscribe).
ONRAMP_BASE_URL = env_str("ONRAMP_BASE_URL", "http://127.0.0.1:8000")
# An open pixel in every email's HTML part. Off by default: Apple Mail Privacy Protection (and other
# image proxies) fetch every pixel whether or not the person read the email, so open rates are
# inflated and say little; Onramp decides nothing on opens (responses and follow-up branches use
# clicks). Turn it on to see open rates on the template, rule and KPI pages (docs/channels.md).
ONRAMP_TRACK_OPENS = env_bool("ONRAMP_TRACK_OPENS", False)
# Global frequency cap: at most MAX follow-ups per person in any rolling PERIOD, across channels.
# Channels by name, each a dotted path to its class, imported on first use one by one: a channel
# whose optional dependency is missing cannot break another (a new channel is one line here).
ONRAMP_CHANNELS = {
    "email": "triggers.channels.email.EmailChannel",
    "in_app": "triggers.channels.in_app.InAppChannel",
    "sms": "triggers.channels.sms.SmsChannel",
    "webhook": "triggers.channels.webhook.WebhookChannel",
}
ONRAMP_GLOBAL_CAP_MAX = env_int("ONRAMP_GLOBAL_CAP_MAX", 2)
ONRAMP_GLOBAL_CAP_PERIOD = env_int("ONRAMP_GLOBAL_CAP_PERIOD_SECONDS", 7 * 86400)
# Workspace quiet hours in people's local time, "21:00-08:00"; empty for none.
ONRAMP_QUIET_HOURS = env_str("ONRAMP_QUIET_HOURS", "")
ONRAMP_DELIVERY_MAX_ATTEMPTS = env_int("ONRAMP_DELIVERY_MAX_ATTEMPTS", 5)
ONRAMP_DELIVERY_LEASE_SECONDS = env_int("ONRAMP_DELIVERY_LEASE_SECONDS", 120)
ONRAMP_DELIVERY_BATCH = env_int("ONRAMP_DELIVERY_BATCH", 500)
# Messages claimed, checked and written as "sending" in one transaction. A worker killed mid-batch
# leaves at most one email/SMS "unknown" (→ review), the one inside its provider call; the rest of
# the batch was never handed to a provider and is sent after the lease (docs/reliability.md).
ONRAMP_DELIVERY_CLAIM = env_int("ONRAMP_DELIVERY_CLAIM", 25)
# Whether each hand-over mark (the commit right before an email's or SMS's provider call) waits
# for its WAL flush. On (the default): one WAL flush per email, and no crash repeats a send. Off:
# the mark is committed asynchronously, which a worker's crash cannot undo; only a crash of the
# PostgreSQL server itself (or a failover to a standby that had not received it) within
# ~3 × wal_writer_delay of a mark can lose it, and then that email may go out a second time
# (docs/reliability.md, "The mark's durability").
ONRAMP_DELIVERY_DURABLE_MARK = env_bool("ONRAMP_DELIVERY_DURABLE_MARK", True)
# On PostgreSQL, claim the next batch and record the last one's successes on a second connection
# while this one hands the current batch to providers (docs/reliability.md).
ONRAMP_DELIVERY_OVERLAP = env_bool("ONRAMP_DELIVERY_OVERLAP", True)
# Backtests of idle rules (PostgreSQL) over flows with at least ONRAMP_BACKTEST_PROCESSES_FROM
# people replay the people in ONRAMP_BACKTEST_PROCESSES forked processes, a share each (1: no fork).
ONRAMP_BACKTEST_PROCESSES = env_int("ONRAMP_BACKTEST_PROCESSES", 2)
ONRAMP_BACKTEST_PROCESSES_FROM = env_int("ONRAMP_BACKTEST_PROCESSES_FROM", 100_000)
# SMS through a Twilio-compatible HTTP API.
ONRAMP_SMS_BASE_URL = env_str("ONRAMP_SMS_BASE_URL", "https://api.twilio.com")
ONRAMP_SMS_ACCOUNT_SID = env_str("ONRAMP_SMS_ACCOUNT_SID", "")
ONRAMP_SMS_AUTH_TOKEN = env_str("ONRAMP_SMS_AUTH_TOKEN", "")
ONRAMP_SMS_FROM = env_str("ONRAMP_SMS_FROM", "")
# Host names of the SMS base URL exempt from the private-address guard (exact names; e.g. a
# provider gateway on the local network). Empty: the provider must be on a public address.
ONRAMP_SMS_ALLOWED_HOSTS = env_list("ONRAMP_SMS_ALLOWED_HOSTS", [])
# Webhooks: Standard Webhooks signing secrets (comma-separated, first signs; "whsec_…" base64).
ONRAMP_WEBHOOK_URL = env_str("ONRAMP_WEBHOOK_URL", "")
ONRAMP_WEBHOOK_SECRETS = env_list("ONRAMP_WEBHOOK_SECRETS", [])
ONRAMP_WEBHOOK_ALLOWED_HOSTS = env_list("ONRAMP_WEBHOOK_ALLOWED_HOSTS", [])
ONRAMP_HTTP_TIMEOUT_SECONDS = env_int("ONRAMP_HTTP_TIMEOUT_SECONDS", 10)
# Outgoing HTTP (SMS provider, webhooks): the connect timeout; ONRAMP_HTTP_TIMEOUT_SECONDS is the
# read timeout. docs/channels.md describes the channels' settings.
ONRAMP_HTTP_CONNECT_TIMEOUT_SECONDS = env_int("ONRAMP_HTTP_CONNECT_TIMEOUT_SECONDS", 5)
# In-app message API: the secret of the user hash (hex HMAC-SHA256 of the userId), and whether the
# hash is required (it is checked whenever it is sent).
ONRAMP_IN_APP_SECRET = env_str("ONRAMP_IN_APP_SECRET", "")
ONRAMP_IN_APP_REQUIRE_HASH = env_bool("ONRAMP_IN_APP_REQUIRE_HASH", False)

# --- Privacy (GDPR erasure) ----------------------------------------------------------------------
# The key of the hashes that tombstones keep of erased people's ids; empty means SECRET_KEY. Set it
# explicitly before ever rotating SECRET_KEY, or events of erased people stop being refused.
ONRAMP_ERASURE_KEY = env_str("ONRAMP_ERASURE_KEY", "")

# --- Operations: metrics and logs (docs/operations.md) -------------------------------------------
# Prometheus multiprocess mode: every process (gunicorn workers, Celery worker, management commands)
# writes its counters to files in this folder and GET /metrics sums them. prometheus-client reads
# the variable itself, when it is first imported, so it is set here, before any metric exists.
# Empty the folder when the whole service (re)starts, not when one process does.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR") or str(VAR_DIR / "metrics")
try:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
except OSError as _error:
    _error_text = str(_error)
else:
    _error_text = "" if os.access(PROMETHEUS_MULTIPROC_DIR, os.W_OK) else "not writable"
if _error_text:
    # Fail at start-up, not at the first counted request.
    raise ImproperlyConfigured(
        f"PROMETHEUS_MULTIPROC_DIR={PROMETHEUS_MULTIPROC_DIR!r} must be a writable folder "
        f"shared by this node's processes ({_error_text})"
    )
os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR
# With a token, /metrics needs "Authorization: Bearer <token>"; without one, loopback clients only.
ONRAMP_METRICS_TOKEN = env_str("ONRAMP_METRICS_TOKEN", "")
# "plain" (default) or "json": one JSON object per line, with the request id and, where they apply,
# the rule, message id and person id. Neither format carries personal data.
ONRAMP_LOG_FORMAT = env_str("ONRAMP_LOG_FORMAT", "plain").strip().lower()
LOGGING = logging_config(
    log_format=ONRAMP_LOG_FORMAT, level=env_str("ONRAMP_LOG_LEVEL", "INFO") or "INFO"
)

# --- Security headers and login throttling (docs/security.md) ------------------------------------
# Django's SecurityMiddleware and XFrameOptionsMiddleware send these on every response.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (dashboard.security.ContentSecurityPolicyMiddleware). Scripts only from
# our own static files: no inline scripts or handlers anywhere (json_script blocks are data). Styles
# allow 'unsafe-inline': Plotly injects <style> elements and sets style attributes on its charts.
ONRAMP_CONTENT_SECURITY_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'", "'unsafe-inline'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
# Failed logins per (user name, client address) before the login form answers 429, and the window.
ONRAMP_LOGIN_MAX_FAILURES = env_int("ONRAMP_LOGIN_MAX_FAILURES", 5)
ONRAMP_LOGIN_LOCKOUT_SECONDS = env_int("ONRAMP_LOGIN_LOCKOUT_SECONDS", 15 * 60)
