"""Reading a person's in-app inbox, and how a message is presented to the widget.

Presentation rules (docs/channels.md):
- A subject starting with ``[modal]`` shows as a modal dialog (the prefix is removed); otherwise a
  banner.
- The call to action is the first Markdown-style link ``[Label](https://…)`` in the body (the
  body then shows just the label), or else the first bare ``http(s)`` URL, labelled "Open".
"""

from __future__ import annotations

import re
from typing import Any

from onboarding.models import Identity
from triggers.models import Message, MessageStatus

INBOX_SIZE = 10
MODAL_PREFIX = "[modal]"
DEFAULT_CTA_LABEL = "Open"
_MARKDOWN_LINK = re.compile(r"\[([^\[\]\n]{1,80})\]\((https?://[^\s()<>]+)\)")
_URL = re.compile(r"https?://[^\s<>\"')\]]+")
_TRAILING_PUNCTUATION = ".,;:!?"


def person_for_identity(kind: str, value: str) -> int | None:
    """The person a ``userId`` (kind "user") or ``anonymousId`` (kind "anonymous") belongs to."""
    return (
        Identity.objects.filter(kind=kind, value=value).values_list("person_id", flat=True).first()
    )


def inbox_messages(person_id: int) -> list[Message]:
    """Sent in-app messages not yet dismissed, newest first."""
    return list(
        Message.objects.filter(
            person_id=person_id,
            channel="in_app",
            status=MessageStatus.SENT,
            dismissed_at__isnull=True,
        ).order_by("-sent_at", "-pk")[:INBOX_SIZE]
    )


def inbox_message(person_id: int, message_id: int) -> Message | None:
    """One sent in-app message of this person (None for anyone else's)."""
    return Message.objects.filter(
        pk=message_id, person_id=person_id, channel="in_app", status=MessageStatus.SENT
    ).first()


def call_to_action(body: str) -> tuple[str, dict[str, str] | None]:
    """The body text to show and the call to action (label and URL), if the body has a link."""
    link = _MARKDOWN_LINK.search(body)
    if link:
        text = body[: link.start()] + link.group(1) + body[link.end() :]
        return text, {"label": link.group(1).strip(), "url": link.group(2)}
    url = _URL.search(body)
    if url:
        return body, {"label": DEFAULT_CTA_LABEL, "url": url.group(0).rstrip(_TRAILING_PUNCTUATION)}
    return body, None


def _iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def present(message: Message) -> dict[str, Any]:
    subject = message.subject.strip()
    display = "banner"
    if subject.lower().startswith(MODAL_PREFIX):
        display, subject = "modal", subject[len(MODAL_PREFIX) :].strip()
    body, cta = call_to_action(message.body)
    return {
        "id": message.pk,
        "display": display,
        "subject": subject,
        "body": body,
        "cta": cta,
        "sentAt": _iso(message.sent_at),
        "seenAt": _iso(message.seen_at),
        "clickedAt": _iso(message.clicked_at),
    }
