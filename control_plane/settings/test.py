from .base import *  # noqa: F403
from .base import env

# Tests create their own database, which needs the owner role; tests that must prove the
# application role's view (row security) switch to it with SET LOCAL ROLE.
DATABASES["default"] = dict(DATABASES["owner"])  # noqa: F405
DATABASES["default"]["TEST"] = {"NAME": env("FLOWPILOT_TEST_DATABASE", "test_flowpilot")}  # noqa: F405
DATABASES["owner"]["TEST"] = {"MIRROR": "default"}  # noqa: F405
# A mirror is a second connection that cannot see a test's uncommitted rows; the test
# connection is the owner already, so system reads use it.
SYSTEM_DATABASE = "default"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
DAGSTER_TIMEOUT_SECONDS = 0.5
FLOWPILOT_FAST_LAUNCH = False  # tests that launch through GraphQL turn it on themselves
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
EMAIL_SEND_ASYNC = False  # mail.outbox is filled before the response
