from .base import *  # noqa: F403
from .base import env

DEBUG = True
ALLOWED_HOSTS = ["*"]
LOGGING["handlers"]["console"]["formatter"] = env("LOG_FORMAT", "console")  # noqa: F405
