"""Dashboard page benchmark (DESIGN §5: the funnel page "p95 under 1 s") over HTTP.

    python bench/pages.py [--db NAME] [--requests 10] [--workers 2] [--threads 1]

Times the funnel pages a growth marketer opens, through gunicorn (production settings, logged in
as a member of the growth group), on the 10 M-event data of the funnel benchmark: run
``python bench/funnel.py --keep-db`` (or ``python bench/backtest.py --setup-only --keep-db``, same
generator and seed) first. ``--db`` names that database (default ``onramp_bench_funnel``, on the
server of ``DATABASE_URL``); it is migrated, given a growth user and the ``plan = pro`` segment if
missing, and never dropped.

For each page: one warm-up request, then ``--requests`` sequential requests from one client;
p50, p95 (nearest rank: with 10 requests, the slowest) and max of the time to the last byte.
The baseline, measured in the same run and in this process, is the engine work the funnel page
does (``gather``, then ``run_funnel``, ``funnel_trends`` and ``time_to_convert`` of the step the
page shows, for the same filters; median of 3 after a warm-up): what is left is templates, Plotly figure JSON, the session and HTTP.

Pages (entries 2026-01-06..2026-02-04, the funnel benchmark's range):
- the funnel page with no filter, with the segment, and with a breakdown by entry ``source``;
- the same results as the htmx partial that a filter change swaps in (``HX-Target:
  funnel-results``);
- the people who dropped at step 2 (first page of the drill-down).
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402 - bench/common.py, next to this file
    database_url,
    free_port,
    machine,
    maintenance_url,
    migrate,
    percentile,
    print_machine,
    print_table,
    server_env,
    start_gunicorn,
    stop_gunicorn,
    with_database,
)

DEFAULT_DB = "onramp_bench_funnel"
SINCE = date(2026, 1, 6)
UNTIL = date(2026, 2, 4)
TARGET_P95 = 1.0
USERNAME = "bench-growth"


def prepare() -> str:
    """A growth user's session key, and the ``pro`` segment the funnel bench uses."""
    from django.contrib.auth.models import Group, User
    from django.test import Client

    from onboarding.models import OnboardingFlow, Segment

    if not OnboardingFlow.objects.filter(slug="activation").exists():
        raise SystemExit("no activation flow: load the data with bench/funnel.py --keep-db first")
    Segment.objects.get_or_create(
        slug="pro",
        defaults={
            "name": "Pro plan",
            "definition": {
                "match": "all",
                "conditions": [{"trait": "plan", "op": "eq", "value": "pro"}],
            },
        },
    )
    user, _ = User.objects.get_or_create(username=USERNAME)
    user.groups.add(Group.objects.get(name="growth"))
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def pages() -> list[tuple[str, str, dict[str, str]]]:
    """(label, path with query, extra headers)."""
    base = {"since": SINCE.isoformat(), "until": UNTIL.isoformat()}
    funnel = "/flows/activation/funnel/?"
    partial = {"HX-Request": "true", "HX-Target": "funnel-results"}
    dropped = {**base, "step": "2", "outcome": "dropped"}
    return [
        ("funnel, no filter", funnel + urlencode(base), {}),
        ("funnel, segment plan = pro", funnel + urlencode({**base, "segment": "pro"}), {}),
        ("funnel, breakdown by source", funnel + urlencode({**base, "breakdown": "source"}), {}),
        ("htmx results, no filter", funnel + urlencode(base), partial),
        ("htmx results, segment", funnel + urlencode({**base, "segment": "pro"}), partial),
        ("people dropped at step 2", "/flows/activation/funnel/people/?" + urlencode(dropped), {}),
    ]


def engine_seconds(segment: bool, breakdown: bool, runs: int, *, apart: bool = False) -> float:
    """Median time of the engine calls the funnel page makes, in this process; ``apart``: each
    report gathering the entrants itself, as the page did before it shared one gathering."""
    from dashboard.figures_funnels import time_to_convert_step
    from dashboard.funnels import FunnelQuery, funnel_trends, gather, run_funnel, time_to_convert
    from onboarding.models import OnboardingFlow, Segment

    query = FunnelQuery(
        flow=OnboardingFlow.objects.get(slug="activation"),
        since=SINCE,
        until=UNTIL,
        segment=Segment.objects.get(slug="pro") if segment else None,
        breakdown="source" if breakdown else None,
    )

    def page_work() -> None:  # as dashboard/views_funnels.py does it
        gathered = None if apart else gather(query)
        result = run_funnel(query, gathered)
        funnel_trends(query, "day", gathered)
        # The page bins the histogram it shows: the friction step's, else the first reached.
        shown = time_to_convert_step(result.steps[1:], result.friction_step)
        time_to_convert(query, gathered=gathered, step=shown)

    page_work()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        page_work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def time_page(port: int, session: str, path: str, headers: dict[str, str], runs: int) -> list:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    sent = {"Cookie": f"sessionid={session}", **headers}
    times = []
    for attempt in range(runs + 1):  # the first is the warm-up
        started = time.perf_counter()
        conn.request("GET", path, headers=sent)
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise SystemExit(f"GET {path} answered {response.status}: {body[:300]!r}")
        if attempt:
            times.append(elapsed)
    conn.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default=DEFAULT_DB, help=f"loaded database ({DEFAULT_DB})")
    parser.add_argument("--requests", type=int, default=10, help="timed requests per page (10)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (1: sync)")
    args = parser.parse_args()
    url = with_database(
        database_url(f"postgres://postgres@127.0.0.1:5432/{args.db}", "bench/pages.py"), args.db
    )
    info = machine(maintenance_url(url)[0], pg_settings=True)
    migrate(url)
    session = prepare()

    cases = {
        "funnel, no filter": (False, False),
        "funnel, segment plan = pro": (True, False),
        "funnel, breakdown by source": (False, True),
    }
    baselines = {
        label: (engine_seconds(*case, 3), engine_seconds(*case, 3, apart=True))
        for label, case in cases.items()
    }
    for label, (together, apart) in baselines.items():
        print(f"engine, {label}: {together:.3f} s (reports apart: {apart:.3f} s)", flush=True)
    baselines["htmx results, no filter"] = baselines["funnel, no filter"]
    baselines["htmx results, segment"] = baselines["funnel, segment plan = pro"]

    # Production settings serve hashed static names from collectstatic's manifest.
    static_root = tempfile.mkdtemp(prefix="onramp-bench-static-")
    env = {**server_env(url), "DJANGO_STATIC_ROOT": static_root}
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "collectstatic", "--noinput", "-v", "0"],
        env=env,
        check=True,
    )
    port = free_port()
    server = start_gunicorn(env, port, args.workers, args.threads)
    rows = []
    try:
        for label, path, headers in pages():
            times = time_page(port, session, path, headers, args.requests)
            p95 = percentile(times, 0.95)
            engine = baselines.get(label)
            rows.append(
                [
                    label,
                    f"{percentile(times, 0.5):.3f}",
                    f"{p95:.3f}",
                    f"{max(times):.3f}",
                    f"{engine[0]:.3f}" if engine is not None else "–",
                    f"{engine[1]:.3f}" if engine is not None else "–",
                    "yes" if p95 < TARGET_P95 else "NO",
                ]
            )
            print(f"{label}: p95 {p95:.3f} s", flush=True)
    finally:
        stop_gunicorn(server)

    print()
    print_machine(info)
    print(
        f"{'setup':<20} database {args.db}; gunicorn {args.workers} workers x {args.threads}"
        f" threads; {args.requests} sequential requests per page after a warm-up"
    )
    print()
    print_table(
        ["page", "p50 s", "p95 s", "max s", "engine s", "apart s", f"p95 < {TARGET_P95:g} s"],
        [30, 7, 7, 7, 8, 7, 11],
        rows,
    )
    print(
        "\nentries 2026-01-06..2026-02-04. engine s: gather + run_funnel + funnel_trends +"
        " time_to_convert in-process, median of 3; apart s: the three reports each gathering"
        " the entrants (the page before it shared them)"
    )


if __name__ == "__main__":
    main()
