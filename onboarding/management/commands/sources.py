"""``manage.py sources create|list|rotate``: manage client apps and their write keys (DESIGN §3.5).

Thin: the key lifecycle lives in :mod:`onboarding.services.sources`; this command only parses
arguments and prints. A write key is printed exactly once, when it is issued.
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from onboarding.models import Source
from onboarding.services.sources import IssuedKey, source_create, source_rotate

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``5m``, ``24h``, ``7d`` (the duration syntax of DESIGN §3.4); ``0`` means none."""
    if text.strip() == "0":
        return timedelta(0)
    match = _DURATION.match(text)
    if not match:
        raise CommandError(
            f"invalid duration {text!r}: write a number and a unit, e.g. 90s, 5m, 24h or 7d"
        )
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


class Command(BaseCommand):
    help = "Create, list and rotate sources (client apps) and their write keys."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        create = actions.add_parser("create", help="Create a source and print its write key once.")
        create.add_argument("name")
        actions.add_parser("list", help="List sources (never their keys).")
        rotate = actions.add_parser("rotate", help="Issue a new write key for a source.")
        rotate.add_argument("name")
        rotate.add_argument(
            "--grace",
            default="0",
            help="How long the previous key keeps working, e.g. 24h (default: stops now).",
        )

    def handle(self, *args, **options) -> None:
        action = options["action"]
        if action == "create":
            self._create(options["name"])
        elif action == "list":
            self._list()
        else:
            self._rotate(options["name"], parse_duration(options["grace"]))

    def _create(self, name: str) -> None:
        if Source.objects.filter(name=name).exists():
            raise CommandError(f"a source named {name!r} already exists")
        try:
            issued = source_create(name=name)
        except ValidationError as error:
            raise CommandError(f"cannot create source {name!r}: {_messages(error)}") from None
        self.stdout.write(self.style.SUCCESS(f"Created source {name!r}."))
        self._print_key(issued)

    def _rotate(self, name: str, grace: timedelta) -> None:
        try:
            issued = source_rotate(name=name, grace=grace)
        except Source.DoesNotExist:
            raise CommandError(f"no source named {name!r} (see `sources list`)") from None
        self.stdout.write(self.style.SUCCESS(f"Rotated the write key of {name!r}."))
        if grace:
            expires = issued.source.previous_key_expires_at
            self.stdout.write(f"The previous key keeps working until {_when(expires)}.")
        else:
            self.stdout.write("The previous key no longer works.")
        self._print_key(issued)

    def _print_key(self, issued: IssuedKey) -> None:
        self.stdout.write(f"Write key: {issued.write_key}")
        self.stdout.write(
            "Store it now: it cannot be shown again (only a SHA-256 hash of it is kept)."
        )

    def _list(self) -> None:
        header = ("NAME", "KEY PREFIX", "ACTIVE", "CREATED", "ROTATED")
        rows = [
            (
                source.name,
                source.write_key_prefix + "…",
                "yes" if source.is_active else "no",
                _when(source.created_at),
                _when(source.rotated_at),
            )
            for source in Source.objects.order_by("name")
        ]
        if not rows:
            self.stdout.write("No sources yet: create one with `manage.py sources create NAME`.")
            return
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            self.stdout.write(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            )


def _messages(error: ValidationError) -> str:
    if hasattr(error, "message_dict"):
        return "; ".join(
            f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items()
        )
    return " ".join(error.messages)
