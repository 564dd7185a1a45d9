"""Every chart a page serves is a figure that plotly accepts.

The pages hand plotly.js figure dicts built by pure functions (``dashboard/figures*.py``,
``dashboard/experiments/figures.py``). Here each figure that the pages actually embed, on the demo's
data, goes through ``plotly.graph_objects.Figure``, which validates every trace type, property name
and value against plotly's schema (the schema of the same installed package whose plotly.js the
pages load), so a misspelt property fails here instead of being silently ignored in the browser.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import plotly.graph_objects as go
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from triggers.models import Experiment, Rule
from triggers.services.backtests import backtest_execute, backtest_start

pytestmark = pytest.mark.django_db

CHART = re.compile(r'data-plotly-figure="(?P<id>[\w-]+)"')


def embedded_figures(html: str) -> dict[str, dict]:
    """Each chart's figure: the ``json_script`` that its ``data-plotly-figure`` names."""
    figures = {}
    for name in CHART.findall(html):
        script = re.search(
            rf'<script id="{re.escape(name)}" type="application/json">(.*?)</script>', html, re.S
        )
        assert script, f"chart {name} has no figure script"
        figures[name] = json.loads(script[1])
    return figures


def test_every_embedded_figure_validates_against_plotly_schema():
    call_command("seed_demo", "--people", "60", "--seed", "7", verbosity=0)
    admin = get_user_model().objects.create_superuser("figures", "f@example.com", "x")
    client = Client()
    client.force_login(admin)
    experiment = Experiment.objects.order_by("pk").first()
    assert experiment is not None, "the demo has an experiment"
    rule = Rule.objects.get(slug="pause-2m-nudge")
    now = timezone.now()
    run = backtest_execute(backtest_start(rule, now - timedelta(days=30), now, admin).pk)
    pages = [
        "/",
        "/flows/activation/funnel/",
        "/flows/activation/funnel/?breakdown=device&interval=week",
        "/kpis/",
        f"/rules/experiments/{experiment.slug}/",
        f"/rules/backtests/{run.pk}/report/",
    ]
    seen: dict[str, dict] = {}
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        seen.update(embedded_figures(response.content.decode()))

    expected = {
        "events-chart-figure",
        "funnel-figure",
        "breakdown-figure",
        "trend-figure",
        "ttc-figure",
        "kpi-completion-figure",
        "kpi-ttv-figure",
        "rates-figure",
        "over-time-figure",
        "backtest-per-day-figure",
    }
    assert expected <= set(seen), f"pages did not embed {sorted(expected - set(seen))}"
    assert any(name.startswith("rule-sends-") for name in seen), "no per-rule KPI figure"
    for name, figure in seen.items():
        try:
            go.Figure(figure)  # raises ValueError on any property plotly does not know
        except ValueError as error:
            pytest.fail(f"{name} is not a valid plotly figure: {error}")


def test_the_schema_check_catches_a_misspelt_property():
    with pytest.raises(ValueError, match="colour"):
        go.Figure({"data": [{"type": "bar", "x": [1], "y": [2], "marker": {"colour": "red"}}]})
