"""Make a new API key for a service caller: prints the key (give it to the caller) and the
WA_OUTBOX_API_KEYS entry to add to settings (only the key's hash is stored)."""

from django.core.management.base import BaseCommand

from wa_outbox.permissions import hash_api_key, new_api_key


class Command(BaseCommand):
    help = "Print a new API key and its WA_OUTBOX_API_KEYS settings entry."

    def add_arguments(self, parser):
        parser.add_argument("name", help="a name for the caller, e.g. billing-worker")
        parser.add_argument(
            "--users",
            default="all",
            help='comma-separated user ids whose sessions the key may touch, or "all"',
        )

    def handle(self, *args, name, users, **options):
        scope = "all" if users == "all" else [int(u) for u in users.split(",") if u.strip()]
        key = new_api_key()
        entry = {"name": name, "hash": hash_api_key(key), "users": scope}
        self.stdout.write(f"API key (give it to the caller, store it nowhere else): {key}")
        self.stdout.write(f"Settings entry for WA_OUTBOX_API_KEYS:\n    {entry!r},")
