"""Channels are named by dotted path in settings and imported one by one: a channel whose optional
dependency is missing fails only its own sends (retried), never another channel's."""

from __future__ import annotations

import sys

import pytest

from triggers.channels import TransportError, channel_for
from triggers.channels.email import EmailChannel
from triggers.delivery.pipeline import deliver_due
from triggers.models import Message

from .conftest import T0
from .test_channel_sms import M, due_sms

pytestmark = pytest.mark.usefixtures("flow", "templates")


@pytest.fixture
def sms_without_urllib3(monkeypatch):
    """The SMS channel's module as it loads on a machine without urllib3 installed."""
    import triggers.channels

    monkeypatch.delitem(sys.modules, "triggers.channels.sms")
    monkeypatch.delattr(triggers.channels, "sms")
    monkeypatch.setitem(sys.modules, "urllib3", None)  # ``import urllib3`` raises ImportError


def test_each_channel_is_its_class_from_settings(settings):
    assert isinstance(channel_for("email"), EmailChannel)
    assert {name: type(channel_for(name)).__name__ for name in settings.ONRAMP_CHANNELS} == {
        "email": "EmailChannel",
        "in_app": "InAppChannel",
        "sms": "SmsChannel",
        "webhook": "WebhookChannel",
    }
    with pytest.raises(TransportError, match="unknown channel 'fax'") as raised:
        channel_for("fax")
    assert raised.value.permanent


def test_a_channel_missing_its_dependency_breaks_only_itself(sms_without_urllib3):
    assert isinstance(channel_for("email"), EmailChannel)
    assert type(channel_for("in_app")).__name__ == "InAppChannel"
    broken = channel_for("sms")
    with pytest.raises(TransportError, match="urllib3") as raised:
        broken.send(None, None)
    assert not raised.value.permanent  # retried: installing the dependency lets it go out


def test_its_messages_are_retried_while_the_others_are_sent(
    api, timeline, sms_without_urllib3, settings
):
    due_sms(api, timeline)  # an SMS due at T0 + 1 min for u1
    from .test_delivery import event_rule

    event_rule(
        slug="trial-in-app",
        follow_ups=[{"channel": "in_app", "template": "nudge", "delay": "0s"}],
    )
    timeline.send(T0 + M, "u1", "Trial Ending")
    timeline.tick(T0 + 2 * M)
    settings.ONRAMP_GLOBAL_CAP_MAX = 10
    report = deliver_due(now=T0 + 2 * M)
    statuses = dict(Message.objects.values_list("channel", "status"))
    assert statuses == {"in_app": "sent", "sms": "scheduled"}
    assert report.sent == 1
    sms = Message.objects.get(channel="sms")
    assert sms.attempts == 1 and sms.next_attempt_at > T0 + 2 * M


class Recording(EmailChannel):
    """The email channel, recording its hooks (class-level: the pass makes its own instance)."""

    calls: list[str] = []

    def open(self) -> None:
        Recording.calls.append("open")
        super().open()

    def close(self) -> None:
        Recording.calls.append("close")
        super().close()
        raise RuntimeError("a broken quit")  # must not hide the pass's results


def test_a_pass_opens_each_channel_once_and_closes_it_even_when_close_fails(
    api, timeline, smtp, settings
):
    from .test_delivery_batches import _emails_due

    settings.ONRAMP_CHANNELS = {**settings.ONRAMP_CHANNELS, "email": f"{__name__}.Recording"}
    Recording.calls.clear()
    _emails_due(api, timeline, 3)

    report = deliver_due(now=T0 + M)

    assert report.sent == 3 and len(smtp.messages) == 3
    assert Recording.calls == ["open", "close"]  # one pass, one instance: opened and closed once
