"""Marketer-written templates: Liquid in a sandbox, strict about missing variables.

Liquid (python-liquid) cannot reach Python objects or the file system: no template loader is
configured, so ``include``/``render`` find nothing, and the context holds only plain data. A
variable that is missing and has no ``default`` aborts the render with a reason, so nobody gets
"Hi ,".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from liquid import Environment, StrictDefaultUndefined, Undefined
from liquid.exceptions import LiquidError

_FORBIDDEN_TAGS = {"include", "render"}


class _SandboxEnvironment(Environment):
    """No loader (templates cannot include others), strict undefined, output size capped."""

    output_stream_limit = 100_000
    loop_iteration_limit = 10_000
    context_depth_limit = 20
    local_namespace_limit = 10_000


# What a draft shows where a variable is missing, for support staff to replace before sending.
MISSING_MARK = "[missing: {name}]"
MISSING_PREFIX = MISSING_MARK.split("{", 1)[0]


class _MarkedUndefined(Undefined):
    """A missing variable renders as ``[missing: name]`` (and ``default`` still applies)."""

    __slots__ = ()

    def __str__(self) -> str:
        # The hint names the whole path ("person.traits.plan is undefined"), the name only its start.
        hint = self.hint or ""
        path = hint.removesuffix(" is undefined") if hint.endswith(" is undefined") else self.name
        return MISSING_MARK.format(name=path.strip("'\""))


ENVIRONMENT = _SandboxEnvironment(undefined=StrictDefaultUndefined, autoescape=False)
HTML_ENVIRONMENT = _SandboxEnvironment(undefined=StrictDefaultUndefined, autoescape=True)
DRAFT_ENVIRONMENT = _SandboxEnvironment(undefined=_MarkedUndefined, autoescape=False)


class TemplateProblem(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else error.__class__.__name__


def validate_source(field: str, source: str) -> None:
    """Refuse a template that cannot work: bad syntax, unknown filters, includes."""
    try:
        template = ENVIRONMENT.from_string(source)
    except LiquidError as error:
        raise TemplateProblem(field, _first_line(error)) from None
    tags = set(template.tag_names(include_partials=False))
    forbidden = tags & _FORBIDDEN_TAGS
    if forbidden:
        raise TemplateProblem(field, f"the {sorted(forbidden)[0]} tag is not allowed")
    unknown = set(template.filter_names(include_partials=False)) - set(ENVIRONMENT.filters)
    if unknown:
        raise TemplateProblem(field, f"unknown filter {sorted(unknown)[0]!r}")


def person_context(person: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a template can read: the person's traits at the top level, plus ``person``."""
    traits = {k: v for k, v in (person.traits or {}).items() if isinstance(k, str)}
    person_data = {
        "id": person.pk,
        "external_id": person.external_id or "",
        "email": person.email,
        "phone": person.phone,
        "timezone": person.timezone,
        "traits": traits,
    }
    context = {**traits, "person": person_data}
    if person.email and "email" not in context:
        context["email"] = person.email
    return {**context, **(extra or {})}


def render(subject: str, body: str, context: dict[str, Any], *, html: bool = False) -> Rendered:
    """Render strictly; raises TemplateProblem naming the field and the missing variable."""
    environment = HTML_ENVIRONMENT if html else ENVIRONMENT
    out = []
    for field, source in (("subject", subject), ("body", body)):
        try:
            out.append(environment.from_string(source).render(**context) if source else "")
        except LiquidError as error:
            raise TemplateProblem(field, _first_line(error)) from None
    return Rendered(*out)


def render_draft(subject: str, body: str, context: dict[str, Any]) -> Rendered:
    """Render for a person to edit (support's "Edit and send"): what the strict render would give,
    with each missing variable marked ``[missing: name]`` instead of failing. A template that does
    not render at all gives its source."""
    out = []
    for source in (subject, body):
        try:
            out.append(DRAFT_ENVIRONMENT.from_string(source).render(**context) if source else "")
        except LiquidError:
            out.append(source)
    return Rendered(*out)
