"""Import and export the whole configuration document (DESIGN §3.4).

Import validates everything first and reports every problem with its path; only a fully valid
file is applied, in one transaction. Objects are keyed by slug; objects in the database that the
file does not mention are left alone. Applying writes only objects whose values differ, so
importing the same file twice is a no-op.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from django.db import transaction

from onboarding.segments.parse import flow_step_counts
from onboarding.services.flows import SaveStatus

from .errors import Problem, ProblemsError
from .sections import ImportContext, Spec, not_yet_supported, registered_sections
from .yamlio import dump, load


@dataclass(frozen=True)
class Change:
    kind: str  # a section's label: "flow", "segment", "template", "rule"
    slug: str
    status: SaveStatus

    def __str__(self) -> str:
        return f"{self.kind} {self.slug}: {self.status}"


@dataclass(frozen=True)
class ImportResult:
    changes: list[Change]
    dry_run: bool

    def count(self, status: SaveStatus) -> int:
        return sum(1 for change in self.changes if change.status == status)

    @property
    def changed(self) -> bool:
        return any(change.status != "unchanged" for change in self.changes)

    def summary(self) -> str:
        counts = ", ".join(
            f"{self.count(status)} {status}" for status in ("created", "updated", "unchanged")
        )
        prefix = "Dry run, nothing written: would be " if self.dry_run else ""
        return f"{prefix}{counts}."


def parse_document(text: str) -> Any:
    try:
        return load(text)
    except yaml.YAMLError as error:
        raise ProblemsError([Problem("", f"not valid YAML: {error}")]) from None


def validate_document(data: Any) -> tuple[ImportContext, list[tuple[Any, list[Spec]]]]:
    """Validate the whole document; raise :class:`ProblemsError` with every problem."""
    context = ImportContext(flows=flow_step_counts())
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ProblemsError([Problem("", "the document must be a mapping of sections")])
    sections = registered_sections()
    known = {section.key for section in sections}
    refused = not_yet_supported()
    for key in data:
        if key in refused:
            context.fail(str(key), "not supported by this version yet; remove the section")
        elif key not in known:
            context.fail(str(key), f"unknown section (expected {', '.join(sorted(known))})")
    planned = [(section, section.validate(data.get(section.key), context)) for section in sections]
    if context.problems:
        raise ProblemsError(context.problems)
    return context, planned


def import_config(text: str, *, dry_run: bool = False) -> ImportResult:
    """Validate ``text`` and apply it (or, with ``dry_run``, report what applying would do)."""
    data = parse_document(text)
    with transaction.atomic():
        context, planned = validate_document(data)
        changes: list[Change] = []
        for section, specs in planned:
            act = section.status if dry_run else section.apply
            changes += [Change(section.label, spec.slug, act(spec, context)) for spec in specs]
    return ImportResult(changes, dry_run)


def export_config() -> str:
    """The whole configuration as YAML; importing it into an empty database and exporting again
    gives the same text."""
    return dump({section.key: section.export() for section in registered_sections()})
