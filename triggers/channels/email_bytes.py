"""The bytes of a follow-up email (multipart/alternative, text and HTML), written directly.

Django's ``EmailMultiAlternatives.message().as_bytes()`` builds the same email through the standard
library's MIME classes and generator: about 1.5 ms of CPU per email on this machine, most of the
delivering process's time per email (docs/benchmarks.md, "Delivery"). The structure of a follow-up
never changes (two parts, a fixed set of headers), so the delivery pipeline writes it here instead,
following the choices Django makes for the same email: UTF-8 parts sent as 7bit or 8bit, or
quoted-printable when a line is longer than RFC 5322's 998 characters; a non-ASCII subject as an
RFC 2047 encoded word. Anything outside that shape (a header with a line break, an address that
is not plain ASCII) returns None, and the channel builds that email with Django instead.
"""

from __future__ import annotations

import binascii
import random
import re
from email.header import Header

_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")
_NEWLINES = re.compile(r"\r\n|\r|\n")
_LONGEST_LINE = 998  # RFC 5322 §2.1.1, without the CRLF


def plain_address(address: str) -> bool:
    """An address that is its own header form: plain ASCII ``local@domain``, no display name."""
    return _ADDRESS.fullmatch(address) is not None


def _header_value(value: str) -> str | None:
    if "\r" in value or "\n" in value:
        return None
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(linesep="\r\n")


def _part(content: str, subtype: str) -> bytes:
    """One text part with its headers, as Django's ``SafeMIMEText`` writes it."""
    lines = _NEWLINES.split(content)
    if any(len(line.encode()) > _LONGEST_LINE for line in lines):
        encoding = "quoted-printable"
        body = binascii.b2a_qp("\r\n".join(lines).encode(), istext=True)
        body = _NEWLINES.sub("\r\n", body.decode("ascii")).encode("ascii")
    else:
        encoding = "7bit" if content.isascii() else "8bit"
        body = "\r\n".join(lines).encode()
    head = (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "MIME-Version: 1.0\r\n"
        f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
    )
    return head.encode("ascii") + body


def _boundary() -> str:
    """A MIME boundary like the standard library's (random, not a secret)."""
    return f"==============={random.randrange(10**18, 10**19)}=="


def email_bytes(
    *,
    sender: str,
    to: str,
    subject: str,
    date: str,
    headers: dict[str, str],
    text: str,
    html: str,
) -> bytes | None:
    """A follow-up's bytes (CRLF line endings), or None when it needs Django's general builder.

    ``sender`` is the ``From`` header as Django writes it; ``to`` a plain address
    (:func:`plain_address`); ``headers`` the extra headers, ASCII (Message-ID among them)."""
    values = [_header_value(value) for value in (subject, *headers.values())]
    if None in values or not plain_address(to):
        return None
    subject_value, *extra = values
    fields = [("Subject", subject_value), ("From", sender), ("To", to), ("Date", date)]
    fields += zip(headers, extra, strict=True)
    head = "".join(f"{name}: {value}\r\n" for name, value in fields)
    if not head.isascii() or any(len(line) > _LONGEST_LINE for line in head.split("\r\n")):
        return None
    parts = [_part(text, "plain"), _part(html, "html")]
    boundary = _boundary()
    while any(boundary.encode() in part for part in parts):
        boundary = _boundary()
    delimiter = f"--{boundary}\r\n".encode()
    return b"".join(
        [
            f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'
            f"MIME-Version: 1.0\r\n{head}\r\n".encode("ascii"),
            delimiter,
            parts[0],
            b"\r\n",
            delimiter,
            parts[1],
            f"\r\n--{boundary}--\r\n".encode("ascii"),
        ]
    )
