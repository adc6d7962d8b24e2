"""Settings shared by every environment. Values come from the environment through
`flowpilot.config` (paths, database URLs) and `env()` below, read here and nowhere else."""

from __future__ import annotations

import importlib.util
import os
from datetime import timedelta
from urllib.parse import parse_qs, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

from flowpilot import config as runtime

RUNTIME = runtime.load()


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, "").strip() or default


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value in {"1", "true", "yes", "on"}


def database_from_url(url: str) -> dict:
    """A Django DATABASES entry from a libpq URL, including `?host=/socket/dir` URLs."""
    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    host = query.get("host", [parsed.hostname or ""])[0]
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")),
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": host,
        "PORT": str(parsed.port or ""),
        "CONN_MAX_AGE": int(env("DATABASE_CONN_MAX_AGE", "0")),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {"application_name": env("FLOWPILOT_PROCESS", "flowpilot")},
    }


BASE_DIR = runtime.PROJECT_ROOT
SECRET_KEY = env("DJANGO_SECRET_KEY", "dev-insecure-change-me")
DEBUG = False
ALLOWED_HOSTS = [h for h in env("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]

INSTALLED_APPS = [
    "control_plane.core.admin_apps.FlowPilotAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "control_plane.core",
    "control_plane.users",
    "control_plane.organizations",
    "control_plane.workflows",
    "control_plane.executions",
    "control_plane.connectors",
]

MIDDLEWARE = [
    "control_plane.core.middleware.RequestIdMiddleware",
    "control_plane.core.middleware.RejectNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "control_plane.users.authentication.UserSessionMiddleware",
    "control_plane.organizations.middleware.OrganizationContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "control_plane.urls"
ASGI_APPLICATION = "control_plane.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# `default` is the application role (no BYPASSRLS); `owner` owns the schema and runs migrations
# and explicit system tasks.
DATABASES = {
    "default": database_from_url(RUNTIME.database_url),
    "owner": database_from_url(RUNTIME.database_owner_url),
}
# Explicit system tasks across tenants (the code location's job index, the trigger sensor's
# sweep) read through this alias; requests and run workers use `default` under row security.
SYSTEM_DATABASE = "owner"
DATABASE_ROUTERS = ["control_plane.core.tenancy.SystemContextRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "users.User"

# Argon2id when argon2-cffi is installed (it is a dependency), with the parameters below (see
# control_plane/users/hashers.py and bench/login.py for the choice); PBKDF2 and scrypt still
# verify older hashes, which are upgraded at the next successful login.
PASSWORD_HASHERS = [
    *(
        ["control_plane.users.hashers.FlowPilotArgon2PasswordHasher"]
        if importlib.util.find_spec("argon2")
        else []
    ),
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
ARGON2_MEMORY_KIB = int(env("ARGON2_MEMORY_KIB", "19456"))
ARGON2_TIME_COST = int(env("ARGON2_TIME_COST", "2"))
ARGON2_PARALLELISM = int(env("ARGON2_PARALLELISM", "1"))
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Identity (control_plane.users). Durations are whole minutes/hours/days from the environment.
FLOWPILOT_ENCRYPTION_KEYS = [k for k in env("FLOWPILOT_ENCRYPTION_KEYS").split(",") if k.strip()]
FLOWPILOT_WEB_URL = env("FLOWPILOT_WEB_URL", RUNTIME.control_plane_url).rstrip("/")
AUTH_SESSION_TTL = timedelta(days=int(env("AUTH_SESSION_TTL_DAYS", "14")))
AUTH_SESSION_TOUCH_INTERVAL = timedelta(seconds=60)  # last_seen_at is written at most this often
AUTH_TRUST_X_FORWARDED_FOR = env_bool("AUTH_TRUST_X_FORWARDED_FOR", False)  # behind a proxy
AUTH_REQUIRE_VERIFIED_EMAIL = env_bool("AUTH_REQUIRE_VERIFIED_EMAIL", True)
LOGIN_LOCKOUT_WINDOW = timedelta(minutes=int(env("LOGIN_LOCKOUT_WINDOW_MINUTES", "15")))
LOGIN_MAX_FAILURES_PER_ACCOUNT = int(env("LOGIN_MAX_FAILURES_PER_ACCOUNT", "5"))
LOGIN_MAX_FAILURES_PER_IP = int(env("LOGIN_MAX_FAILURES_PER_IP", "50"))
LOGIN_ATTEMPT_RETENTION = timedelta(days=int(env("LOGIN_ATTEMPT_RETENTION_DAYS", "90")))
EMAIL_VERIFICATION_TTL = timedelta(hours=int(env("EMAIL_VERIFICATION_TTL_HOURS", "48")))
PASSWORD_RESET_TTL = timedelta(minutes=int(env("PASSWORD_RESET_TTL_MINUTES", "60")))
MFA_CHALLENGE_TTL = timedelta(minutes=5)
AUTH_MAX_EMAILS_PER_HOUR = int(env("AUTH_MAX_EMAILS_PER_HOUR", "5"))  # per user and purpose
INVITATION_TTL = timedelta(days=int(env("INVITATION_TTL_DAYS", "7")))
MFA_ISSUER = env("MFA_ISSUER", "FlowPilot")
MFA_BACKUP_CODE_COUNT = 10

# One generic OpenID Connect provider for "Sign in with ..." (authorization code + PKCE).
OIDC_PROVIDERS = (
    {
        env("OIDC_PROVIDER", "oidc"): {
            "issuer": env("OIDC_ISSUER").rstrip("/"),
            "client_id": env("OIDC_CLIENT_ID"),
            "client_secret": env("OIDC_CLIENT_SECRET"),
            "scopes": env("OIDC_SCOPES", "openid email profile"),
        }
    }
    if env("OIDC_ISSUER")
    else {}
)
OIDC_STATE_TTL = timedelta(minutes=10)
OIDC_TIMEOUT_SECONDS = float(env("OIDC_TIMEOUT_SECONDS", "10"))

SESSION_COOKIE_AGE = int(AUTH_SESSION_TTL.total_seconds())
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"

EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = int(env("EMAIL_PORT", "25"))
EMAIL_HOST_USER = env("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_SEND_ASYNC = env_bool("EMAIL_SEND_ASYNC", True)  # send after commit, off the request
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "FlowPilot <no-reply@flowpilot.local>")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = RUNTIME.home / "static"
MEDIA_ROOT = RUNTIME.home / "media"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "control_plane.users.authentication.BearerSessionAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "control_plane.core.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "control_plane.core.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["control_plane.core.parsers.StrictJSONParser"],
    "UNAUTHENTICATED_USER": None,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "URL_FORMAT_OVERRIDE": None,  # `?format=` belongs to the views (export), not to DRF
}

SPECTACULAR_SETTINGS = {
    "TITLE": "FlowPilot API",
    "DESCRIPTION": "Control plane of FlowPilot: workflows rendered as Dagster jobs.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "MemberStatusEnum": "control_plane.organizations.models.OrganizationMember.Status",
        "WorkflowStatusEnum": "control_plane.workflows.models.Workflow.Status",
        "TriggerKindEnum": "control_plane.workflows.models.WorkflowTrigger.Kind",
        "TriggerEventKindEnum": "control_plane.executions.models.TriggerEvent.Kind",
        "ExecutionStatusEnum": "control_plane.executions.models.WorkflowExecution.Status",
        "ConnectorKindEnum": "control_plane.connectors.models.Connector.Kind",
        "RerunStrategyEnum": "control_plane.executions.models.WorkflowExecution.RerunStrategy",
    },
}

# Live updates (control_plane/executions/live.py): each process LISTENs to Postgres itself, so
# the channel layer only fans out inside the process. `group_expiry` is raised from its one day
# so that a socket open longer keeps its subscriptions (sockets leave their groups on close).
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels.layers.InMemoryChannelLayer",
        "CONFIG": {"capacity": 1000, "expiry": 60, "group_expiry": 400 * 24 * 3600},
    }
}
# A socket re-checks its session and membership before sending, at most this often.
LIVE_AUTH_RECHECK_SECONDS = float(env("LIVE_AUTH_RECHECK_SECONDS", "30"))

# Dagster, as seen from the control plane (GraphQL on the webserver).
# FLOWPILOT_DAGSTER_URL: where the control plane reaches Dagster when that differs from where
# `flowpilot up` starts it (a proxy in between; tests/e2e/test_exactly_once.py).
DAGSTER_URL = env("FLOWPILOT_DAGSTER_URL", RUNTIME.dagster_url).rstrip("/")
DAGSTER_CODE_LOCATION = runtime.CODE_LOCATION
FLOWPILOT_CODE_SHARDS = RUNTIME.code_shards  # > 1: one code location per shard (core/dagster.py)
DAGSTER_TIMEOUT_SECONDS = float(env("DAGSTER_TIMEOUT_SECONDS", "2"))

# Fast path (control_plane/executions/launch.py): runs launched through GraphQL right after the
# trigger commits, by a bounded pool of threads; the trigger sensor leaves them this grace
# period, and sweeps an event still `launching` this long after its claim. The stale threshold
# must outlast any launch request still in flight: at least 4 x DAGSTER_TIMEOUT_SECONDS.
FLOWPILOT_FAST_LAUNCH = env_bool("FLOWPILOT_FAST_LAUNCH", True)
FLOWPILOT_FAST_LAUNCH_THREADS = int(env("FLOWPILOT_FAST_LAUNCH_THREADS", "4"))
FLOWPILOT_FAST_LAUNCH_QUEUE = int(env("FLOWPILOT_FAST_LAUNCH_QUEUE", "1000"))
FLOWPILOT_FAST_LAUNCH_GRACE_SECONDS = float(env("FLOWPILOT_FAST_LAUNCH_GRACE_SECONDS", "5"))
FLOWPILOT_LAUNCH_STALE_SECONDS = float(env("FLOWPILOT_LAUNCH_STALE_SECONDS", "30"))
if FLOWPILOT_LAUNCH_STALE_SECONDS < 4 * DAGSTER_TIMEOUT_SECONDS:
    raise ImproperlyConfigured(
        f"FLOWPILOT_LAUNCH_STALE_SECONDS ({FLOWPILOT_LAUNCH_STALE_SECONDS:g}) must be at least "
        f"4 x DAGSTER_TIMEOUT_SECONDS ({DAGSTER_TIMEOUT_SECONDS:g})"
    )

LOG_LEVEL = env("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "control_plane.core.logging.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "control_plane.core.logging.JsonFormatter"},
        "console": {"format": "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["request_id"],
            "formatter": env("LOG_FORMAT", "json"),
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "django.server": {"level": "WARNING"},
    },
}
