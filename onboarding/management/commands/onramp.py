"""``manage.py onramp export [--output FILE]`` and ``manage.py onramp import FILE [--dry-run]``.

Configuration as code (DESIGN §3.4): flows, segments, templates, rules and experiments as one YAML document. A thin entry point
over :mod:`onboarding.configfile.document`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from onboarding.configfile.document import export_config, import_config
from onboarding.configfile.errors import ProblemsError


class Command(BaseCommand):
    help = "Export or import flows, segments, templates, rules and experiments as one YAML document (configuration as code)."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="action", required=True, metavar="{export,import}")
        export = commands.add_parser("export", help="Write the configuration as YAML.")
        export.add_argument("--output", "-o", help="File to write (default: standard output).")
        imp = commands.add_parser(
            "import", help="Validate a YAML file and apply it; nothing changes unless all is valid."
        )
        imp.add_argument("file", help='The YAML file ("-" for standard input).')
        imp.add_argument(
            "--dry-run", action="store_true", help="Report what would change; write nothing."
        )

    def handle(self, *args, **options) -> None:
        if options["action"] == "export":
            self._export(options["output"])
        else:
            self._import(options["file"], dry_run=options["dry_run"])

    def _export(self, output: str | None) -> None:
        text = export_config()
        if output:
            Path(output).write_text(text, encoding="utf-8")
            self.stderr.write(f"Wrote {output}.")
        else:
            self.stdout.write(text, ending="")

    def _import(self, name: str, *, dry_run: bool) -> None:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        except OSError as error:
            raise CommandError(f"cannot read {name}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise CommandError(f"{name} is not UTF-8 text") from None
        try:
            result = import_config(text, dry_run=dry_run)
        except ProblemsError as error:
            for problem in error.problems:
                self.stderr.write(f"{name}: {problem}")
            count = len(error.problems)
            raise CommandError(
                f"{count} problem{'s' if count != 1 else ''} found; nothing was changed."
            ) from None
        verb = "would be" if dry_run else "is"
        for change in result.changes:
            self.stdout.write(f"{change.kind} {change.slug} {verb} {change.status}")
        self.stdout.write(self.style.SUCCESS(result.summary()))
