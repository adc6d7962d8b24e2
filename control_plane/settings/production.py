from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import FLOWPILOT_ENCRYPTION_KEYS, RUNTIME, SECRET_KEY, env, env_bool

if RUNTIME.embedded:
    raise ImproperlyConfigured("production needs DATABASE_URL and DAGSTER_PG_URL")
if SECRET_KEY.startswith("dev-"):
    raise ImproperlyConfigured("set DJANGO_SECRET_KEY in production")

if not FLOWPILOT_ENCRYPTION_KEYS:
    raise ImproperlyConfigured("set FLOWPILOT_ENCRYPTION_KEYS (comma-separated Fernet keys)")

EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
CSRF_TRUSTED_ORIGINS = [o for o in env("DJANGO_CSRF_TRUSTED_ORIGINS").split(",") if o]
