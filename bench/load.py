"""Load test of the batch endpoint with locust (research P10): the knee, then the rate limit.

    python bench/load.py [--users 1,2,4,8,16,32] [--step-seconds 20] [--batch 20]
                         [--limit 20] [--locust PATH] [--keep-db]

PostgreSQL only; needs ``locust`` (the ``bench`` extra: ``pip install -e '.[bench]'``, or any
virtualenv with locust, given as ``--locust …/bin/locust``). This file is both the orchestrator
(run with the project's Python) and the locustfile (locust imports it; the user class below needs
nothing but locust and the standard library). In one run:

1. creates its own database (``DATABASE_URL``, default
   ``postgres://postgres@127.0.0.1:5432/onramp_load``; dropped and re-created), migrates it,
   installs the demo flow and a source, exactly as ``bench/ingest.py`` does;
2. generates template batches of 20 events with the seeded demo generator (:mod:`onboarding.demo`);
   each locust request sends one of them with fresh messageIds, so every event is a new row;
3. phase 1, the knee: gunicorn as in ``bench/ingest.py`` (production settings, 2 workers x 2
   threads, rate limiter off); one headless locust run per step of concurrent users (closed loop,
   no think time), each ``--step-seconds`` long; reports requests/s, events/s, p50/p95/p99 and
   errors per step; the knee is the step with the most events/s whose p99 is under 200 ms;
4. phase 2, the rate limit: gunicorn again with ``REDIS_URL`` set (``ONRAMP_LOAD_REDIS_URL``,
   default redis db 7) and ``ONRAMP_RATE_LIMIT_REQUESTS=--limit`` per 1-second window, loaded
   with the knee's users (at least 4); checks that every 429 carries an integer ``Retry-After``
   >= 1, that there is no 5xx, and that the accepted requests stay within the limit;
5. prints the tables and drops the database (``--keep-db`` keeps it).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/onramp_load"
DEFAULT_REDIS = "redis://127.0.0.1:6379/7"
P99_TARGET_MS = 200

# --- the locust side (imported by locust; standard library and locust only) -----------------------

try:
    from locust import FastHttpUser, constant, events, task
except ImportError:  # the orchestrator runs without locust
    FastHttpUser = None

if FastHttpUser is not None and os.environ.get("ONRAMP_LOAD_TEMPLATES"):
    _TEMPLATES = [
        json.loads(line)
        for line in Path(os.environ["ONRAMP_LOAD_TEMPLATES"]).read_text().splitlines()
        if line
    ]
    _AUTH = os.environ["ONRAMP_LOAD_AUTH"]

    @events.quitting.add_listener
    def _write_result(environment, **kwargs) -> None:
        """The final figures (locust's CSV files can miss the last seconds)."""
        total = environment.stats.total
        seconds = max(1e-9, (total.last_request_timestamp or 0) - total.start_time)
        errors: dict[str, int] = {}
        for error in environment.stats.errors.values():
            message = str(error.error).removeprefix("CatchResponseError(").strip("')\"")
            errors[message] = errors.get(message, 0) + error.occurrences
        result = {
            "requests": total.num_requests,
            "failures": total.num_failures,
            "rps": total.num_requests / seconds,
            "p50": total.get_response_time_percentile(0.50),
            "p95": total.get_response_time_percentile(0.95),
            "p99": total.get_response_time_percentile(0.99),
            "errors": errors,
        }
        Path(os.environ["ONRAMP_LOAD_RESULT"]).write_text(json.dumps(result))

    class BatchClient(FastHttpUser):
        """A backend library flushing 20-event batches back to back (no think time)."""

        wait_time = constant(0)

        def on_start(self) -> None:
            self.rng = random.Random()
            self.prefix = uuid.uuid4().hex[:12]
            self.sent = 0

        @task
        def batch(self) -> None:
            template = self.rng.choice(_TEMPLATES)
            events = []
            for event in template["batch"]:
                self.sent += 1
                events.append({**event, "messageId": f"load-{self.prefix}-{self.sent}"})
            body = json.dumps({"batch": events, "sentAt": template["sentAt"]})
            headers = {"Authorization": _AUTH, "Content-Type": "application/json"}
            with self.client.post(
                "/v1/batch", data=body, headers=headers, name="/v1/batch", catch_response=True
            ) as response:
                status = response.status_code
                if status == 200:
                    response.success()
                    return
                if status == 429:
                    value = response.headers.get("Retry-After", "")
                    ok = value.isdigit() and int(value) >= 1
                    response.failure(f"429 Retry-After {'ok' if ok else 'MISSING'}")
                elif status >= 500 or status == 0:
                    response.failure(f"{status or 'connection error'} server error")
                else:
                    response.failure(f"{status} client error")


# --- the orchestrator ----------------------------------------------------------------------------


def _locust_executable(given: str | None) -> str:
    candidates = [given, shutil.which("locust"), str(Path(sys.executable).with_name("locust"))]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit("locust not found: pip install -e '.[bench]' or pass --locust PATH")


def run_locust(
    locust: str, port: int, users: int, seconds: int, env: dict[str, str], out: Path
) -> dict:
    """One headless locust run; its final figures (written by the locustfile on quitting)."""
    result_file = out / f"u{users}-{time.monotonic_ns()}.json"
    command = [locust, "-f", __file__, "--headless", "--only-summary", "--loglevel", "WARNING"]
    command += ["-u", str(users), "-r", str(users), "-t", f"{seconds}s"]
    command += ["--host", f"http://127.0.0.1:{port}", "--stop-timeout", "5"]
    env = {**env, "ONRAMP_LOAD_RESULT": str(result_file)}
    subprocess.run(
        command,
        cwd=BENCH.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return {"users": users, **json.loads(result_file.read_text())}


def main() -> None:
    import argparse
    import base64
    import tempfile

    sys.path.insert(0, str(BENCH))
    from common import (
        database_url,
        drop_database,
        free_port,
        machine,
        maintenance_url,
        print_machine,
        recreate_database,
        server_env,
        start_gunicorn,
        stop_gunicorn,
    )
    from ingest import generate, setup_django

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="1,2,4,8,16,32", help="locust users per step")
    parser.add_argument("--step-seconds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=20, help="events per request (20)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--threads", type=int, default=2, help="threads per worker (2)")
    parser.add_argument("--limit", type=int, default=20, help="phase 2: requests/s per key")
    parser.add_argument("--limit-seconds", type=int, default=20)
    parser.add_argument("--locust", help="the locust executable (default: on PATH or in venv)")
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()
    url = database_url(DEFAULT_URL, "bench/load.py")
    redis_url = os.environ.get("ONRAMP_LOAD_REDIS_URL", DEFAULT_REDIS)
    locust = _locust_executable(args.locust)
    steps = [int(u) for u in args.users.split(",")]

    info = machine(maintenance_url(url)[0])
    recreate_database(url)
    key = setup_django(url)
    from django.db import connections

    from onboarding.models import Source

    source_id = Source.objects.get(name="bench").pk
    connections.close_all()
    out = Path(tempfile.mkdtemp(prefix="onramp-load-"))
    templates = out / "templates.jsonl"
    bodies, _, _ = generate(100 * args.batch, args.batch, source_id, 0)
    templates.write_bytes(b"\n".join(bodies) + b"\n")
    locust_env = dict(os.environ)
    locust_env.pop("PYTHONPATH", None)
    locust_env["ONRAMP_LOAD_TEMPLATES"] = str(templates)
    locust_env["ONRAMP_LOAD_AUTH"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()

    # Phase 1: the knee, rate limiter off.
    port = free_port()
    server = start_gunicorn(server_env(url), port, args.workers, args.threads)
    results = []
    try:
        for users in steps:
            result = run_locust(locust, port, users, args.step_seconds, locust_env, out)
            results.append(result)
            print(
                f"users {users:>3}: {result['rps']:7.1f} req/s, "
                f"{result['rps'] * args.batch:7.0f} events/s, p99 {result['p99']:.0f} ms, "
                f"errors {result['errors']}",
                flush=True,
            )
    finally:
        stop_gunicorn(server)
    under = [r for r in results if r["p99"] < P99_TARGET_MS and r["failures"] == 0]
    knee = max(under, key=lambda r: r["rps"]) if under else None

    # Phase 2: past the per-key rate limit, counters in Redis.
    import psycopg

    with psycopg.connect(url) as conn:
        before = conn.execute("SELECT count(*) FROM onboarding_event").fetchone()[0]
    limited_env = server_env(url)
    limited_env.update(
        REDIS_URL=redis_url,
        ONRAMP_RATE_LIMIT_REQUESTS=str(args.limit),
        ONRAMP_RATE_LIMIT_WINDOW="1",
    )
    users = max(4, knee["users"] if knee else 4)
    port = free_port()
    server = start_gunicorn(limited_env, port, args.workers, args.threads)
    try:
        limited = run_locust(locust, port, users, args.limit_seconds, locust_env, out)
    finally:
        stop_gunicorn(server)
    with psycopg.connect(url) as conn:
        after = conn.execute("SELECT count(*) FROM onboarding_event").fetchone()[0]
    accepted = (after - before) // args.batch
    throttled = sum(n for e, n in limited["errors"].items() if e.startswith("429"))
    missing = sum(n for e, n in limited["errors"].items() if "MISSING" in e)
    server_errors = sum(n for e, n in limited["errors"].items() if "server error" in e)
    # Fixed 1-second windows: a run of T seconds touches at most T + 1 windows.
    allowed = args.limit * (args.limit_seconds + 2)

    print()
    print_machine(info)
    print(
        f"{'setup':<20} gunicorn {args.workers} workers x {args.threads} threads, locust "
        f"(FastHttpUser, no think time) on the same machine, {args.batch} events per request, "
        f"{args.step_seconds} s per step"
    )
    print()
    print("| users | requests | req/s | events/s | p50 ms | p95 ms | p99 ms | errors |")
    print("|------:|---------:|------:|---------:|-------:|-------:|-------:|-------:|")
    for r in results:
        mark = " (knee)" if r is knee else ""
        print(
            f"| {r['users']}{mark} | {r['requests']} | {r['rps']:.1f} | "
            f"{r['rps'] * args.batch:.0f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | "
            f"{r['failures']} |"
        )
    if knee:
        print(
            f"\nknee: {knee['rps'] * args.batch:.0f} events/s at {knee['users']} users with p99 "
            f"{knee['p99']:.0f} ms (< {P99_TARGET_MS} ms); SLO at 70 %: "
            f"{0.7 * knee['rps'] * args.batch:.0f} events/s"
        )
    else:
        print(f"\nno step had p99 < {P99_TARGET_MS} ms without errors")
    print(
        f"\nrate limit {args.limit} req/s per key, {users} users, {args.limit_seconds} s: "
        f"{limited['requests']} requests, {accepted} accepted (bound {allowed}), {throttled} "
        f"429s ({missing} without Retry-After), {server_errors} 5xx, "
        f"other errors { ({e: n for e, n in limited['errors'].items() if not e.startswith('429')}) }"
    )
    verdict = []
    if missing:
        verdict.append(f"{missing} 429s without Retry-After")
    if server_errors or any(r["errors"] for r in results):
        verdict.append("errors in the knee phase or 5xx in the limit phase")
    if accepted > allowed:
        verdict.append(f"accepted {accepted} > {allowed}")
    if not throttled:
        verdict.append("no 429 at all: the limit was never reached")
    print("verdict:", "; ".join(verdict) if verdict else "ok")
    if not args.keep_db:
        drop_database(url)
    shutil.rmtree(out, ignore_errors=True)
    if verdict:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
