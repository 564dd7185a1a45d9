"""The email channel's send in two parts (start: the SMTP transaction up to the end of the data;
finish: the final "." and its answer), and how the answer to the "." is classified."""

from __future__ import annotations

import smtplib
from types import SimpleNamespace

import pytest

from triggers.channels.base import Outgoing, TransportError
from triggers.channels.email import EmailChannel, _Mail, _quoted


class HalfConversation:
    """An SMTP connection inside DATA: records what is sent, answers the "." as told."""

    def __init__(self, answer=(250, b"OK"), error: Exception | None = None):
        self.answer, self.error = answer, error
        self.sent: list[bytes] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def getreply(self):
        if self.error:
            raise self.error
        return self.answer

    def close(self) -> None:
        self.closed = True


def _finish(smtp: HalfConversation):
    channel = EmailChannel()
    closed = []
    channel.connection = SimpleNamespace(connection=smtp, close=lambda: closed.append(True))
    channel._in_data = True
    outgoing = Outgoing(None, None, _Mail(email=None, message_id="<m1@example.com>", smtp=smtp))
    return channel, closed, lambda: channel.finish(outgoing)


def test_the_answer_250_to_the_final_dot_is_the_send():
    smtp = HalfConversation()
    channel, closed, finish = _finish(smtp)
    assert finish().provider_id == "<m1@example.com>"
    assert smtp.sent == [b".\r\n"] and not closed and not channel._in_data


def test_no_answer_to_the_final_dot_is_an_unknown_outcome_never_a_retry():
    """The "." went out: the server may have taken the message, so it must not be sent again."""
    smtp = HalfConversation(error=smtplib.SMTPServerDisconnected("Connection unexpectedly closed"))
    _, closed, finish = _finish(smtp)
    with pytest.raises(TransportError) as raised:
        finish()
    assert raised.value.unknown and raised.value.permanent
    assert closed  # the next message reconnects


@pytest.mark.parametrize(("code", "permanent"), [(451, False), (554, True)])
def test_a_refusal_of_the_data_is_a_failed_attempt(code, permanent):
    _, _, finish = _finish(HalfConversation(answer=(code, b"no")))
    with pytest.raises(TransportError) as raised:
        finish()
    assert (raised.value.unknown, raised.value.permanent) == (False, permanent)


def test_abandoning_closes_the_socket_inside_the_data_without_a_quit():
    """A QUIT inside DATA would be read as part of the message."""
    smtp = HalfConversation()
    channel, _, _ = _finish(smtp)
    channel.abandon(Outgoing(None, None, None))
    assert smtp.closed and smtp.sent == [] and channel.connection.connection is None


def test_the_data_is_quoted_as_smtplib_quotes_it():
    assert _quoted(b"Subject: x\r\n\r\n.hidden\r\nend") == b"Subject: x\r\n\r\n..hidden\r\nend\r\n"
    assert _quoted(b"a\r\n") == b"a\r\n"
