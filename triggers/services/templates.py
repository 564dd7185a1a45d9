"""Writes to message templates: validated at save time, every change audited."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from triggers.models import MessageTemplate
from triggers.rendering import TemplateProblem, validate_source

from .audit import audit

SUBJECT_CHANNELS = ("email",)


def template_validate(*, channel: str, subject: str, body: str) -> None:
    """Raise ValidationError keyed by field for a template that cannot work."""
    errors: dict[str, list[str]] = {}
    if channel in SUBJECT_CHANNELS and not subject.strip():
        errors["subject"] = ["An email needs a subject."]
    if not body.strip():
        errors["body"] = ["The message body is empty."]
    for field, source in (("subject", subject), ("body", body)):
        if field in errors:
            continue
        try:
            validate_source(field, source)
        except TemplateProblem as problem:
            errors[field] = [problem.message]
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def template_save(
    *, slug: str, channel: str, subject: str, body: str, actor: Any = None
) -> tuple[MessageTemplate, bool]:
    """Create or update a template; returns (template, changed)."""
    template_validate(channel=channel, subject=subject, body=body)
    template = MessageTemplate.objects.select_for_update().filter(slug=slug).first()
    created = template is None
    template = template or MessageTemplate(slug=slug)
    before = {"channel": template.channel, "subject": template.subject, "body": template.body}
    after = {"channel": channel, "subject": subject, "body": body}
    if not created and before == after:
        return template, False
    template.channel, template.subject, template.body = channel, subject, body
    template.full_clean()
    template.save()
    changes = {k: [before[k], after[k]] for k in after if before[k] != after[k]}
    audit(actor=actor, action="create" if created else "update", obj=template, changes=changes)
    return template, True
