"""Argon2id with parameters from settings.

Django's own Argon2 parameters (100 MiB, 2 passes, 8 lanes) cost ~106 ms of both cores per
check on the 2-core reference machine: about 9 logins per second for the whole machine, and
a cheap way to exhaust the CPU with wrong passwords. The default here is OWASP's recommended
minimum for Argon2id (19 MiB, 2 passes, 1 lane): ~20 ms of one core, ~100 checks per second on
two cores (bench/login.py). Online guessing is bounded by the login lockout, not by the hash.
Stored hashes carry their parameters; after a change, each password is re-hashed at the user's
next successful login."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.hashers import Argon2PasswordHasher


class FlowPilotArgon2PasswordHasher(Argon2PasswordHasher):
    @property
    def time_cost(self) -> int:
        return settings.ARGON2_TIME_COST

    @property
    def memory_cost(self) -> int:
        return settings.ARGON2_MEMORY_KIB

    @property
    def parallelism(self) -> int:
        return settings.ARGON2_PARALLELISM
