"""The directly written bytes of a follow-up email read back as the email Django would build."""

from __future__ import annotations

import email
import email.policy

import pytest
from django.core.mail import EmailMultiAlternatives

from triggers.channels.email import _from_header
from triggers.channels.email_bytes import email_bytes, plain_address

SENDER = "Onramp <onramp@example.com>"
HEADERS = {
    "List-Unsubscribe": "<https://app.example.com/u/abc:def>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    "X-Onramp-Message": "k" * 64,
    "Message-ID": "<123.456@example.com>",
}
DATE = "Mon, 07 Dec 2026 19:00:00 -0000"
CASES = {
    "ascii": ("Finish setting up, Ada", "Hi Ada,\n\nOne step away.\n", "<p>Hi Ada</p>"),
    "non-ascii": ("Fini, José ✨", "Hi José,\n\nÇa avance — 🚀\n", "<p>Hi José 🚀</p>"),
    "long-lines": ("Long", "x" * 1200 + "\n.dot\n", "<p>" + "é" * 700 + "</p>"),
    "dots-and-crs": ("Dots", ".\n..\r\nline\rend\n", "<p>.</p>\n.<br>"),
    "trailing-space": ("Space ", "ends with a space \n\ttab\n", "<p> </p>   "),
}


def _parsed(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def _django(subject: str, text: str, html: str) -> bytes:
    mail = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=SENDER,
        to=["ada@example.com"],
        headers={**HEADERS, "Date": DATE},
    )
    mail.attach_alternative(html, "text/html")
    return mail.message().as_bytes(linesep="\r\n")


@pytest.mark.parametrize("case", CASES)
def test_the_written_email_reads_as_djangos(case):
    subject, text, html = CASES[case]
    ours = email_bytes(
        sender=_from_header(SENDER, "utf-8"),
        to="ada@example.com",
        subject=subject,
        date=DATE,
        headers=HEADERS,
        text=text,
        html=html,
    )
    theirs = _django(subject, text, html)
    mine, django = _parsed(ours), _parsed(theirs)
    for name in ("Subject", "From", "To", "Date", "MIME-Version", *HEADERS):
        assert str(mine[name]).strip() == str(django[name]).strip(), name  # Django folds
    assert mine.get_content_type() == django.get_content_type() == "multipart/alternative"
    for part, reference in zip(mine.iter_parts(), django.iter_parts(), strict=True):
        assert part.get_content_type() == reference.get_content_type()
        assert part["Content-Transfer-Encoding"] == reference["Content-Transfer-Encoding"]
        assert part.get_content_charset() == reference.get_content_charset() == "utf-8"
        assert part.get_content() == reference.get_content()
    assert all(len(line) <= 998 for line in ours.split(b"\r\n"))
    assert b"\n" not in ours.replace(b"\r\n", b"")  # CRLF only


@pytest.mark.parametrize(
    ("to", "subject", "headers"),
    [
        ("José <jose@example.com>", "Hi", HEADERS),
        ("jos\u00e9@example.com", "Hi", HEADERS),
        ("ada@example.com", "Hi\nBcc: eve@example.com", HEADERS),
        ("ada@example.com", "Hi", {**HEADERS, "X-Onramp-Message": "a\r\nBcc: eve@example.com"}),
        ("ada@example.com", "H" * 1000, HEADERS),
    ],
    ids=["display-name", "non-ascii-address", "newline-in-subject", "newline-in-header", "long"],
)
def test_what_it_does_not_write_is_left_to_django(to, subject, headers):
    """None: the channel then builds the email with Django (which refuses header injection)."""
    written = email_bytes(
        sender=SENDER, to=to, subject=subject, date=DATE, headers=headers, text="t", html="h"
    )
    assert written is None


def test_plain_addresses():
    assert plain_address("bench000001@example.com")
    assert not plain_address("Ada <ada@example.com>")
    assert not plain_address("ada@exämple.com")
    assert not plain_address("ada@example.com\r\nBcc: eve@example.com")
