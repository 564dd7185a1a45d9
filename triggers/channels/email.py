"""Email through Django's mail backend (SMTP in production): text and HTML parts.

The HTML part is built from the rendered text: paragraphs, every link rewritten through the signed
click redirect, an open pixel when ``ONRAMP_TRACK_OPENS`` is on (off by default: image proxies such
as Apple Mail Privacy Protection fetch it unread), and styles inlined on the elements (mail clients
drop <style>). The plain-text part keeps the links as written, so clicks in text-only mail clients
are not counted.
``List-Unsubscribe`` and ``List-Unsubscribe-Post`` give one-click unsubscribe (RFC 8058).
"""

from __future__ import annotations

import html
import re
import smtplib
from collections.abc import Callable
from email.utils import make_msgid, parseaddr
from functools import partial

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection

from triggers.links import click_url, open_pixel_url, unsubscribe_url

from .base import Channel, SendResult, TransportError

_URL = re.compile(r"https?://[^\s<>\"')]+")
_P_STYLE = "margin:0 0 16px;font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;font-size:16px;line-height:1.5;color:#1f2937"
_A_STYLE = "color:#4f46e5;text-decoration:underline"
_WRAP_STYLE = "max-width:560px;margin:0 auto;padding:24px"
_FOOT_STYLE = "font-family:Helvetica,Arial,sans-serif;font-size:12px;color:#6b7280"


def _linkify(text: str, link: Callable[[str], str]) -> str:
    out, last = [], 0
    for match in _URL.finditer(text):
        out.append(html.escape(text[last : match.start()]))
        target = match.group(0)
        out.append(
            f'<a href="{html.escape(link(target))}" style="{_A_STYLE}">{html.escape(target)}</a>'
        )
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def html_body(text: str, *, link: Callable[[str], str], unsubscribe: str, pixel: str | None) -> str:
    """The HTML part of a follow-up: the rendered text in paragraphs with inlined styles, each
    URL a link through ``link`` (the click redirect), the unsubscribe footer, the open pixel."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    body = "".join(
        f'<p style="{_P_STYLE}">' + _linkify(p, link).replace("\n", "<br>") + "</p>"
        for p in paragraphs
    )
    image = (
        f'<img src="{html.escape(pixel)}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px">'
        if pixel
        else ""
    )
    return (
        f'<!doctype html><html><body style="margin:0;background:#ffffff">'
        f'<div style="{_WRAP_STYLE}">{body}'
        f'<p style="{_FOOT_STYLE}"><a href="{html.escape(unsubscribe)}" style="{_FOOT_STYLE}">'
        f"Unsubscribe</a></p>{image}</div></body></html>"
    )


def compose(
    *,
    subject: str,
    text: str,
    to: str,
    unsubscribe: str,
    link: Callable[[str], str],
    pixel: str | None,
    headers: dict[str, str],
    connection=None,
) -> EmailMultiAlternatives:
    """A follow-up email, text and HTML, exactly as it goes out; the sandbox's test sends use it
    too, so a test send looks like the real one."""
    email = EmailMultiAlternatives(
        subject=subject,
        body=text + f"\n\n--\nUnsubscribe: {unsubscribe}\n",
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[to],
        headers=headers,
        connection=connection,
    )
    email.attach_alternative(
        html_body(text, link=link, unsubscribe=unsubscribe, pixel=pixel), "text/html"
    )
    return email


def _sender_domain() -> str:
    """The domain of ``DEFAULT_FROM_EMAIL`` (no DNS lookup of this host's name, as Django does)."""
    _, address = parseaddr(settings.DEFAULT_FROM_EMAIL)
    return address.rpartition("@")[2] or "localhost"


class EmailChannel(Channel):
    name = "email"
    at_most_once = True

    def __init__(self) -> None:
        self.connection = None  # a delivery pass's one SMTP connection, between open and close

    def open(self) -> None:
        # Connects on the first send; unopened, Django's backend would connect and quit for
        # every message.
        self.connection = get_connection()

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()

    def address(self, person) -> str | None:
        return person.email or None

    def send(self, message, person) -> SendResult:
        unsubscribe = unsubscribe_url(message.pk)
        # Our own Message-ID, so the ledger's provider id names the email a bounce or a reply
        # refers to (Django would otherwise make one while sending, and not tell us).
        message_id = make_msgid(domain=_sender_domain())
        email = compose(
            subject=message.subject,
            text=message.body,
            to=person.email,
            unsubscribe=unsubscribe,
            link=partial(click_url, message.pk),
            pixel=open_pixel_url(message.pk) if settings.ONRAMP_TRACK_OPENS else None,
            headers={
                "List-Unsubscribe": f"<{unsubscribe}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                "X-Onramp-Message": message.idempotency_key,
                "Message-ID": message_id,
            },
            connection=self.connection or get_connection(),
        )
        try:
            if self.connection is not None:
                # A pass's connection stays open across its messages (open() is a no-op when it
                # is); unopened, Django's backend would connect and quit for every message.
                self.connection.open()
            email.send(fail_silently=False)
        except smtplib.SMTPRecipientsRefused as error:
            self._drop_connection()
            # 4xx at RCPT (greylisting, a full mailbox) is temporary; only 5xx is final.
            permanent = all(500 <= code < 600 for code, _ in error.recipients.values())
            raise TransportError(
                f"recipient refused: {error.recipients}", permanent=permanent
            ) from None
        except smtplib.SMTPResponseException as error:
            self._drop_connection()
            permanent = 500 <= error.smtp_code < 600
            raise TransportError(
                f"SMTP {error.smtp_code}: {error.smtp_error!r}", permanent=permanent
            ) from None
        except (TimeoutError, smtplib.SMTPException, OSError) as error:
            self._drop_connection()
            raise TransportError(f"SMTP unavailable: {error}") from None
        return SendResult(provider_id=message_id)

    def _drop_connection(self) -> None:
        """After an error the pass's connection may be dead: the next message reconnects."""
        if self.connection is None:
            return
        try:
            self.connection.close()
        except Exception:  # quitting a broken connection may fail; it is dropped either way
            self.connection.connection = None
