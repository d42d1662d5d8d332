"""Labelloop settings: one file, read from the environment.

Embedded default (no environment): SQLite under var/, Celery's filesystem broker under var/,
DEBUG on. Production (DJANGO_ENV=production or DEBUG=0): SECRET_KEY is required, DEBUG off.
"""
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("LABELLOOP_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use 1/0, true/false, yes/no.")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None


def env_list(name: str, default: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, default).split(",") if part.strip()]


PRODUCTION = os.environ.get("DJANGO_ENV", "").lower() == "production" or os.environ.get("DEBUG") in ("0", "false", "False")
DEBUG = env_bool("DEBUG", not PRODUCTION)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. In production set SECRET_KEY to a long random string, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`."
        )
    SECRET_KEY = "embedded-mode-only-not-secret"  # noqa: S105 — never used when PRODUCTION

# /metrics (config/metrics.py): served to loopback, or to `Authorization: Bearer $METRICS_TOKEN`.
# Behind a reverse proxy on the same host every request looks like loopback: set METRICS_LOOPBACK=0.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_LOOPBACK = env_bool("METRICS_LOOPBACK", True)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "" if PRODUCTION else "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "axes",
    "django_prometheus",
    "labeling",
    "modeling",
]

MIDDLEWARE = [
    # First and (but for axes) last: django-prometheus times the whole request between them.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    "config.middleware.DatabaseUnavailableMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
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
    }
]


# Lets several test runs share one machine without sharing a test database.
TEST_DB_SUFFIX = os.environ.get("TEST_DB_SUFFIX", "")


def database_from_url(url: str) -> dict:
    # Health checks make a request after a database restart reconnect instead of failing.
    config = dj_database_url.parse(url, conn_max_age=env_int("DB_CONN_MAX_AGE", 60), conn_health_checks=True)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config["CONN_MAX_AGE"] = 0
        config["OPTIONS"] = {
            # WAL lets readers proceed while one writer writes; IMMEDIATE takes the write lock at
            # BEGIN so two claims never both read, then both try to upgrade (the SQLite analogue
            # of SELECT ... FOR UPDATE: writers are serialised, so a claim sees every prior claim).
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
        # A file, not :memory:, so a Celery worker or live server in another process sees it.
        config["TEST"] = {"NAME": str(VAR_DIR / f"test{TEST_DB_SUFFIX}.sqlite3")}
    else:
        config["TEST"] = {"NAME": f"test_{config['NAME']}{TEST_DB_SUFFIX}"}
    return config


DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'labelloop.sqlite3'}"
DATABASES = {"default": database_from_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Axes first: it refuses a locked-out username+IP before the password is even checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Login lockout (django-axes): 5 failures for one username from one IP lock that pair for 15
# minutes; the same IP may still log in as someone else, so one attacker cannot lock out a team.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every start when it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
MEDIA_ROOT = VAR_DIR / "media"
# Uploads bigger than this go to a temp file instead of memory; the importer streams either way.
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# --- Labeling ---------------------------------------------------------------
LABELLOOP = {
    "LEASE_MINUTES": env_int("LEASE_MINUTES", 10),
    "IMPORT_MAX_FIELD_CHARS": env_int("IMPORT_MAX_FIELD_CHARS", 100_000),
    "IMPORT_MAX_BYTES": env_int("IMPORT_MAX_BYTES", 512 * 1024 * 1024),
    "IMPORT_BATCH_SIZE": env_int("IMPORT_BATCH_SIZE", 5000),
    # Items in one file: bounds the importer's dedupe sets (about 200 bytes an item).
    "IMPORT_MAX_ROWS": env_int("IMPORT_MAX_ROWS", 5_000_000),
    # Leases an annotator holds at once: the item on screen plus one prefetched behind it.
    "PREFETCH_DEPTH": 2,
    "MODEL_DIR": os.environ.get("MODEL_DIR", str(VAR_DIR / "models")),
    # Training runs: Celery soft/hard limits (seconds).
    "TRAIN_SOFT_TIME_LIMIT": env_int("TRAIN_SOFT_TIME_LIMIT", 900),
    "TRAIN_TIME_LIMIT": env_int("TRAIN_TIME_LIMIT", 960),
    # A training run beats this often while it works; one silent for six beats (runs.DEAD_AFTER_BEATS)
    # has lost its worker (killed, machine gone) and is run again by the periodic check.
    "RUN_HEARTBEAT_SECONDS": env_int("RUN_HEARTBEAT_SECONDS", 15),
    "PREDICT_CHUNK": env_int("PREDICT_CHUNK", 5000),
    # The predict endpoint's two statements run as PostgreSQL prepared statements (planned once
    # per connection). Turn off behind a pooler that shares server connections between clients
    # (PgBouncer in transaction mode), where a statement prepared on one may be missing on another.
    "PREPARED_STATEMENTS": env_bool("DB_PREPARED_STATEMENTS", True),
    # Algorithms training runs choose from (comma-separated names from modeling.training);
    # empty: every available one.
    "TRAIN_ALGORITHMS": env_list("TRAIN_ALGORITHMS", ""),
    # Gold exports: bigger than EXPORT_ASYNC_ROWS runs as a Celery job writing under EXPORT_DIR
    # (web and workers must share that folder); rows are read EXPORT_CHUNK_ROWS at a time.
    "EXPORT_DIR": os.environ.get("EXPORT_DIR", str(VAR_DIR / "exports")),
    "EXPORT_ASYNC_ROWS": env_int("EXPORT_ASYNC_ROWS", 50_000),
    "EXPORT_CHUNK_ROWS": env_int("EXPORT_CHUNK_ROWS", 5000),
}

# --- REST API ---------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: DRF answers an anonymous request with the first class's challenge, so programs
    # get 401 + WWW-Authenticate: Token (session first would turn every 401 into a 403).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.CursorPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Labelloop API",
    "DESCRIPTION": "Import items, claim and label them, review, train, export.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Django's <int:…> matches digits only: a negative id never reaches a view, so say so.
    "PATH_CONVERTER_OVERRIDES": {"int": {"type": "integer", "minimum": 0}},
}

# --- Celery -----------------------------------------------------------------
# The filesystem broker's folder (the embedded default); the tests give theirs a folder of its own.
BROKER_DIR = Path(os.environ.get("CELERY_BROKER_DIR", VAR_DIR / "broker"))
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("out", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Producer and consumer share one folder: what one writes, the other reads.
        "data_folder_in": str(BROKER_DIR / "out"),
        "data_folder_out": str(BROKER_DIR / "out"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    # socket_timeout: a broker that hangs (not refuses) would otherwise block a publish, and so a
    # web request, forever. It must stay above the worker's 1 s BRPOP poll.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "socket_timeout": 3}
# One broker can serve several deployments (or test runs) when each uses its own queue.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE", "celery")
# Job state lives in our own tables (progress bars, history), not in a result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A producer never waits long on a dead broker: the web keeps working without it.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "release-expired-leases": {"task": "labeling.tasks.release_expired_leases", "schedule": 60.0},
    # Dashboard aggregates heal by themselves: projects counted more than 10 minutes ago are recounted.
    "recount-stale-progress": {"task": "labeling.tasks.recount_stale_progress", "schedule": 300.0},
    # Retrain after every N new gold labels (an indexed count per project) and pick up lost runs.
    "check-retraining": {"task": "modeling.tasks.check_retraining", "schedule": 120.0},
    # Sentence embeddings of items that have none (catch-up: imports queue their own at once);
    # chunks handed out within the last hour are not sent again (modeling.tasks.embed_pending).
    "embed-pending": {"task": "modeling.tasks.embed_pending", "schedule": 600.0},
    # Nightly, for projects whose gold labels changed since their last run.
    "scheduled-retraining": {"task": "modeling.tasks.scheduled_retraining", "schedule": crontab(hour=3, minute=0)},
}

# --- Content Security Policy (enforced, not report-only) --------------------------------------
# No inline scripts or styles anywhere: htmx's own indicator style is switched off in base.html.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- Security (production) --------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
