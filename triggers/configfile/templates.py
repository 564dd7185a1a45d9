"""The ``templates:`` section: Liquid message templates, validated as the dashboard does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError

from onboarding.configfile.errors import join_path
from onboarding.configfile.sections import ImportContext, Section, Spec
from onboarding.configfile.yamlio import Literal
from onboarding.services.flows import SaveStatus
from triggers.configfile.common import IMPORT_ACTOR
from triggers.models import MessageTemplate
from triggers.rules.spec import CHANNELS
from triggers.services.lifecycle import archive, unarchive
from triggers.services.templates import template_save, template_validate


class TemplatesSection(Section):
    key = "templates"
    label = "template"
    item_keys = ("slug", "channel", "subject", "body", "archived")

    def validate_item(self, item: Mapping, path: str, context: ImportContext) -> dict[str, Any]:
        channel = item.get("channel")
        if channel is None:
            context.fail(join_path(path, "channel"), "required")
        elif channel not in CHANNELS:
            context.fail(join_path(path, "channel"), f"must be one of {', '.join(CHANNELS)}")
        texts: dict[str, str] = {}
        for field in ("subject", "body"):
            value = item.get(field)
            if value is None:
                if field == "body":
                    context.fail(join_path(path, field), "required")
                elif channel == "email":
                    context.fail(join_path(path, field), "required for an email template")
            elif not isinstance(value, str):
                context.fail(join_path(path, field), "must be a string")
            else:
                texts[field] = value
        subject, body = texts.get("subject", ""), texts.get("body", "")
        slug = item.get("slug")
        errors: dict[str, list[str]] = {}
        try:
            template_validate(
                channel=channel if channel in CHANNELS else "", subject=subject, body=body
            )
        except ValidationError as error:
            errors = error.message_dict
        # Model-level checks (slug format, subject length) for what is not reported already.
        template = MessageTemplate(
            slug=slug if isinstance(slug, str) else "placeholder",
            channel=channel if channel in CHANNELS else "email",
            subject=subject,
            body=body or "placeholder",
        )
        try:
            template.full_clean(validate_unique=False, validate_constraints=False)
        except ValidationError as error:
            for field, messages in error.message_dict.items():
                errors.setdefault(field, []).extend(messages)
        for field, messages in errors.items():
            if field in ("subject", "body") and field not in texts:
                continue  # reported above: missing or not a string
            for message in dict.fromkeys(messages):
                context.fail(join_path(path, field), message)
        archived = item.get("archived", False)
        if not isinstance(archived, bool):
            context.fail(join_path(path, "archived"), "must be true or false")
            archived = False
        return {
            "slug": slug,
            "channel": channel,
            "subject": subject,
            "body": body,
            "archived": archived,
        }

    def status(self, spec: Spec, context: ImportContext) -> SaveStatus:
        values = spec.values
        template = MessageTemplate.objects.filter(slug=spec.slug).first()
        if template is None:
            return "created"
        same = (template.channel, template.subject, template.body, bool(template.archived_at)) == (
            values["channel"],
            values["subject"],
            values["body"],
            values["archived"],
        )
        return "unchanged" if same else "updated"

    def apply(self, spec: Spec, context: ImportContext) -> SaveStatus:
        status = self.status(spec, context)
        if status != "unchanged":
            values = {k: v for k, v in spec.values.items() if k != "archived"}
            template, _ = template_save(**values, actor=IMPORT_ACTOR)
            # Where it is used was checked with the whole file (RulesSection.validate).
            change = archive if spec.values["archived"] else unarchive
            change(obj=template, actor=IMPORT_ACTOR, check=False)
        return status

    def export(self) -> list[dict[str, Any]]:
        templates = []
        for template in MessageTemplate.objects.order_by("slug"):
            data: dict[str, Any] = {"slug": template.slug, "channel": template.channel}
            if template.subject:
                data["subject"] = template.subject
            data["body"] = Literal(template.body)
            if template.archived_at:  # written only when archived
                data["archived"] = True
            templates.append(data)
        return templates
