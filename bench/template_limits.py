"""Template limits benchmark (DESIGN §4.5, docs/security.md "Template limits").

    python bench/template_limits.py [--memory-mb 1024] [--timeout 120]

Each case renders one template through :func:`triggers.rendering.render` (the function the
preview, the sandbox and the worker all call) in a fresh child process whose address space is
capped (``RLIMIT_AS``) and which is killed after ``--timeout`` seconds, so a template that runs
away cannot take the machine with it. Printed per case: how it ended (rendered, refused with the
reason, MemoryError at the cap, killed at the timeout), the child's peak resident memory
(its ``VmHWM``) and the wall time. Run it with ``PYTHONPATH`` naming the checkout to
measure (before and after a change).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BIG = 100_000_000
CASES = [
    ("join over (1..count), count = 1e8 trait", "{{ (1..count) | join: ',' }}", {"count": BIG}),
    ("join | size over (1..1e8) literal", "{{ (1..100000000) | join: ',' | size }}", {}),
    ("reverse over (1..1e8)", "{{ (1..100000000) | reverse | size }}", {}),
    ("uniq over (1..1e8)", "{{ (1..100000000) | uniq | size }}", {}),
]

CHILD = r"""
import json, resource, sys, time
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
source, context = json.loads(sys.stdin.read())
from triggers.rendering import TemplateProblem, render
start = time.perf_counter()
try:
    body = render("", source, context).body
    outcome = f"rendered {len(body)} characters"
except TemplateProblem as problem:
    outcome = f"refused ({getattr(problem, 'reason', 'render')}): {problem.message}"
except MemoryError:
    outcome = "MemoryError at the address-space cap"
elapsed = time.perf_counter() - start
# VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would count the parent's size too
peak = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status")
            if line.startswith("VmHWM:"))
print(json.dumps({"outcome": outcome, "seconds": elapsed, "peak_mb": peak}))
"""


def run_case(source: str, context: dict, memory: int, timeout: float) -> dict:
    """Render in a capped child; returns outcome, seconds and the child's peak RSS in MB."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(memory)],
            input=json.dumps([source, context]),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))},
            check=False,
        )
        lines = done.stdout.strip().splitlines()
        result = json.loads(lines[-1]) if lines else {"outcome": done.stderr.strip()[-200:]}
    except subprocess.TimeoutExpired:
        result = {"outcome": f"killed after the {timeout:.0f} s timeout"}
    result["wall"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-mb", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()}, cap {args.memory_mb} MB, timeout {args.timeout} s")
    for name, source, context in CASES:
        result = run_case(source, context, args.memory_mb * 1024 * 1024, args.timeout)
        peak = f"{result['peak_mb']:.0f} MB" if result.get("peak_mb") else "unknown (killed)"
        render = f"{result['seconds'] * 1000:.1f} ms" if "seconds" in result else "-"
        print(
            f"{name}: {result['outcome']}; peak RSS {peak}; render {render}; "
            f"wall {result['wall']:.2f} s"
        )


if __name__ == "__main__":
    main()
