"""Re-encrypt every stored secret with the newest key:

1. put a new key first in FLOWPILOT_ENCRYPTION_KEYS (keep the old ones after it) and deploy;
2. `flowpilot manage rotate_encryption_keys`;
3. remove the old keys.
"""

from django.core.management.base import BaseCommand

from control_plane.core import crypto


class Command(BaseCommand):
    help = "Re-encrypt stored secrets with the first key of FLOWPILOT_ENCRYPTION_KEYS."

    def add_arguments(self, parser):
        parser.add_argument(
            "--database", default="owner", help="database alias (default: owner, past RLS)"
        )

    def handle(self, *args, **options):
        for label, count in crypto.rotate_all(using=options["database"]).items():
            self.stdout.write(f"{label}: {count} rows re-encrypted")
