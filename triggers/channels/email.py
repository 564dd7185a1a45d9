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
import socket
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate, getaddresses, make_msgid, parseaddr
from functools import lru_cache, partial

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend
from django.core.mail.message import sanitize_address

from triggers.links import click_url, open_pixel_url, unsubscribe_url

from .base import Channel, Outgoing, SendResult, TransportError
from .email_bytes import email_bytes

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
        body=_with_footer(text, unsubscribe),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[to],
        headers=headers,
        connection=connection,
    )
    email.attach_alternative(
        html_body(text, link=link, unsubscribe=unsubscribe, pixel=pixel), "text/html"
    )
    return email


def _with_footer(text: str, unsubscribe: str) -> str:
    """The plain-text part: the rendered text and the unsubscribe link."""
    return text + f"\n\n--\nUnsubscribe: {unsubscribe}\n"


@lru_cache(maxsize=8)
def _from_header(from_email: str, encoding: str) -> str:
    """``From`` as Django writes it (each address sanitised), for the directly written bytes."""
    return ", ".join(sanitize_address(address, encoding) for address in getaddresses((from_email,)))


@lru_cache(maxsize=8)
def _envelope_sender(from_email: str, encoding: str) -> str:
    return sanitize_address(from_email, encoding)


def _sender_domain() -> str:
    """The domain of ``DEFAULT_FROM_EMAIL`` (no DNS lookup of this host's name, as Django does)."""
    return _domain_of(settings.DEFAULT_FROM_EMAIL)


@lru_cache(maxsize=8)
def _domain_of(from_email: str) -> str:
    _, address = parseaddr(from_email)
    return address.rpartition("@")[2] or "localhost"


def _quoted(data: bytes) -> bytes:
    """An email's bytes as the DATA section carries them, without the final ``.`` line: leading
    dots doubled, ending in CRLF (what ``smtplib.SMTP.data`` sends before its ``.``)."""
    quoted = _LEADING_DOT.sub(b"..", data)
    return quoted if quoted.endswith(b"\r\n") else quoted + b"\r\n"


_LEADING_DOT = re.compile(rb"(?m)^\.")


@dataclass
class _Mail:
    email: EmailMultiAlternatives | None  # None when its bytes were written directly
    message_id: str
    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    data: bytes | None = None  # the bytes SMTP sends; None with another mail backend
    smtp: smtplib.SMTP | None = None  # the SMTP transaction waiting for its final "."


class EmailChannel(Channel):
    """Email over the pass's one SMTP connection, in two parts (see :meth:`start`)."""

    name = "email"
    at_most_once = True

    def __init__(self) -> None:
        self.connection = None  # a delivery pass's one SMTP connection, between open and close
        self._in_data = False  # the connection is inside a transaction's DATA (start → finish)

    def open(self) -> None:
        # Connects on the first send; unopened, Django's backend would connect and quit for
        # every message.
        self.connection = get_connection()

    def close(self) -> None:
        self._cut_data()
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()

    def address(self, person) -> str | None:
        return person.email or None

    def send(self, message, person) -> SendResult:
        outgoing = self.prepare(message, person)
        self.start(outgoing)
        return self.finish(outgoing)

    def prepare(self, message, person) -> Outgoing:
        """The email as it goes out: both parts, the headers, and the bytes SMTP sends."""
        unsubscribe = unsubscribe_url(message.pk)
        # Our own Message-ID, so the ledger's provider id names the email a bounce or a reply
        # refers to (Django would otherwise make one while sending, and not tell us).
        message_id = make_msgid(domain=_sender_domain())
        headers = {
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "X-Onramp-Message": message.idempotency_key,
            "Message-ID": message_id,
        }
        link = partial(click_url, message.pk)
        pixel = open_pixel_url(message.pk) if settings.ONRAMP_TRACK_OPENS else None
        if isinstance(self.connection, SmtpBackend):
            # The pass's SMTP connection: the bytes written directly (email_bytes.py), unless
            # the email is outside the shape that module writes.
            encoding = settings.DEFAULT_CHARSET
            data = email_bytes(
                sender=_from_header(settings.DEFAULT_FROM_EMAIL, encoding),
                to=person.email,
                subject=message.subject,
                date=formatdate(localtime=settings.EMAIL_USE_LOCALTIME),
                headers=headers,
                text=_with_footer(message.body, unsubscribe),
                html=html_body(message.body, link=link, unsubscribe=unsubscribe, pixel=pixel),
            )
            if data is not None:
                sender = _envelope_sender(settings.DEFAULT_FROM_EMAIL, encoding)
                mail = _Mail(None, message_id, sender, [person.email], data)
                return Outgoing(message, person, mail)
        email = compose(
            subject=message.subject,
            text=message.body,
            to=person.email,
            unsubscribe=unsubscribe,
            link=link,
            pixel=pixel,
            headers=headers,
            connection=self.connection or get_connection(),
        )
        mail = _Mail(email, message_id)
        if isinstance(self.connection, SmtpBackend):
            encoding = email.encoding or settings.DEFAULT_CHARSET
            mail.sender = sanitize_address(email.from_email, encoding)
            mail.recipients = [sanitize_address(to, encoding) for to in email.recipients()]
            mail.data = email.message().as_bytes(linesep="\r\n")
        return Outgoing(message, person, mail)

    def start(self, outgoing: Outgoing) -> None:
        """Over the pass's SMTP connection, say MAIL, RCPT and DATA and send the whole message
        except the line holding the final ``.``.

        Until that line, the server has accepted nothing: a server takes responsibility for a
        message only with its reply to the end of the data (RFC 5321 §4.1.1.4), and a connection
        that closes before it ends the transaction with no message (§3.8). So the pipeline runs
        this while its hand-over mark commits, and :meth:`finish` sends the ``.`` only after.
        Outside a pass, or with another mail backend (locmem in tests, a file in development),
        the whole send is in :meth:`finish`."""
        mail: _Mail = outgoing.state
        if mail.data is None:
            return
        with self._errors():
            mail.smtp = self._begin(mail)
        self._in_data = True

    def finish(self, outgoing: Outgoing) -> SendResult:
        """The final ``.`` of a begun SMTP transaction, and the server's answer to it (or the
        whole send, when :meth:`start` began none)."""
        mail: _Mail = outgoing.state
        if mail.smtp is None:
            with self._errors():
                mail.email.send(fail_silently=False)
            return SendResult(provider_id=mail.message_id)
        self._in_data = False
        try:
            mail.smtp.send(b".\r\n")
            code, reply = mail.smtp.getreply()
        except (TimeoutError, smtplib.SMTPException, OSError) as error:
            # The end of the data went out and no answer came: the server may have the message.
            self._drop_connection()
            raise TransportError(
                f"SMTP: no answer to the end of data: {error}", unknown=True
            ) from None
        if code != 250:
            self._drop_connection()
            raise TransportError(f"SMTP {code}: {reply!r}", permanent=500 <= code < 600)
        return SendResult(provider_id=mail.message_id)

    def abandon(self, outgoing: Outgoing) -> None:
        """Close the connection in the middle of the data: the server drops the transaction."""
        self._cut_data()

    def _cut_data(self) -> None:
        """Inside DATA, close the socket itself: a QUIT there would be read as part of the
        message (and wait for an answer that never comes)."""
        if self._in_data and self.connection is not None and self.connection.connection:
            self.connection.connection.close()
            self.connection.connection = None
        self._in_data = False

    def _begin(self, mail: _Mail) -> smtplib.SMTP:
        """``smtplib.SMTP.sendmail``'s conversation for one recipient, up to the final ``.``."""
        self.connection.open()  # a no-op while the pass's connection is open
        smtp = self.connection.connection
        if not getattr(smtp, "_onramp_nodelay", False):
            # The final "." is a small write right after the data: without this, Nagle's
            # algorithm holds it until the server acknowledges the data (a delayed ACK, ~40 ms).
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            smtp._onramp_nodelay = True
        sender, recipients, data = mail.sender, mail.recipients, mail.data
        smtp.ehlo_or_helo_if_needed()
        options = [f"size={len(data)}"] if smtp.does_esmtp and smtp.has_extn("size") else []
        code, reply = smtp.mail(sender, options)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        refused = {}
        for recipient in recipients:
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                refused[recipient] = (code, reply)
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)
        code, reply = smtp.docmd("data")
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        smtp.send(_quoted(data))
        return smtp

    @contextmanager
    def _errors(self):
        """SMTP errors before the server may have the message, as :class:`TransportError`."""
        try:
            yield
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

    def _drop_connection(self) -> None:
        """After an error the pass's connection may be dead: the next message reconnects."""
        self._cut_data()
        if self.connection is None:
            return
        try:
            self.connection.close()
        except Exception:  # quitting a broken connection may fail; it is dropped either way
            self.connection.connection = None
