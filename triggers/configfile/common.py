"""What the sections of ``triggers`` share: the import actor, path prefixing and the
validator's catalog (the database overlaid with what the file defines).
"""

from __future__ import annotations

from typing import Any

from onboarding.configfile.errors import Problem, join_path
from onboarding.configfile.sections import ImportContext
from triggers.rules.spec import CHANNELS
from triggers.services.rules import DatabaseCatalog

IMPORT_ACTOR = "import"  # the audit log's actor label for changes made by ``onramp import``


def under(path: str, problems: list[Problem]) -> list[Problem]:
    return [Problem(join_path(path, p.path) if p.path else path, p.message) for p in problems]


class _AnyChannel(str):
    """The channel of a template defined in the file with an invalid channel of its own.

    It matches every follow-up, so that one mistake is reported once (at the template), not again
    at each rule that uses the template.
    """

    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False


class ImportCatalog:
    """The validator's view of flows, segments and templates as they will be once the file is
    applied: the database, overlaid with what the file defines (even where that is invalid, so a
    mistake is reported where it is, not again where it is used)."""

    # A flow in the file whose steps are invalid: its step count is unknown, so any step number
    # passes here; the flow's own problems are reported.
    UNKNOWN_STEPS = 10**6

    def __init__(self, context: ImportContext) -> None:
        self.database = DatabaseCatalog(allow_archived=True)  # archived ones: see ``archived``
        self.context = context
        # Set by a section around each item: an archived rule (a stopped experiment) may name
        # archived objects, anything else may not.
        self.allow_archived = False

    def _file(self, key: str) -> dict[str, dict[str, Any]]:
        return self.context.defined.get(key, {})

    @property
    def archived(self) -> set[tuple[str, str]]:
        """(kind, slug) archived once the file is applied: the file's ``archived`` flags win."""
        if self.allow_archived:
            return set()
        found = set(self.database.all_archived)
        for kind, key in (("flow", "flows"), ("segment", "segments"), ("template", "templates")):
            for slug, values in self._file(key).items():
                if values.get("archived"):
                    found.add((kind, slug))
                else:
                    found.discard((kind, slug))
        return found

    def flow_steps(self, flow_slug: str) -> int | None:
        if ("flow", flow_slug) in self.archived:
            return None
        if flow_slug in self._file("flows"):
            return self.context.flows.get(flow_slug) or self.UNKNOWN_STEPS
        return self.database.flow_steps(flow_slug)

    def flow_window(self, flow_slug: str) -> int | None:
        if ("flow", flow_slug) in self.archived:
            return None
        values = self._file("flows").get(flow_slug)
        if values is not None:
            return values.get("window_seconds")
        return self.database.flow_window(flow_slug)

    def template_channel(self, template_slug: str) -> str | None:
        if ("template", template_slug) in self.archived:
            return None
        values = self._file("templates").get(template_slug)
        if values is None:
            return self.database.template_channel(template_slug)
        channel = values.get("channel")
        return channel if channel in CHANNELS else _AnyChannel(channel or "")

    def has_segment(self, segment_slug: str) -> bool:
        if ("segment", segment_slug) in self.archived:
            return False
        return segment_slug in self._file("segments") or self.database.has_segment(segment_slug)
