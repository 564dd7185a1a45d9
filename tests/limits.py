"""Guards for tests of runaway work: a test that must fail on code without limits must not take the
machine with it while failing (issue 13: one template drove a process to 7.8 GB)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIB = 1024**3


def _address_space() -> int:
    """This process's current virtual size in bytes (``VmSize``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@contextmanager
def memory_ceiling(headroom: int = GIB) -> Iterator[None]:
    """Lower this process's soft ``RLIMIT_AS`` to its current size plus ``headroom`` for the block:
    an allocation past it raises MemoryError instead of growing. The old limit comes back after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = _address_space() + headroom
    if hard != resource.RLIM_INFINITY:
        ceiling = min(ceiling, hard)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


_CHILD = r"""
import json, resource, sys, time
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
source, context = json.loads(sys.stdin.read())
from triggers.rendering import TemplateProblem, render
start = time.perf_counter()
try:
    render("", source, context)
    outcome, reason, message = "rendered", "", ""
except TemplateProblem as problem:
    outcome, reason, message = "refused", getattr(problem, "reason", ""), problem.message
except MemoryError:
    outcome, reason, message = "MemoryError", "", ""
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would count the parent's size too
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
            if line.startswith("VmHWM:"))
print(json.dumps({"outcome": outcome, "reason": reason, "message": message,
                  "seconds": seconds, "peak_bytes": peak}))
"""


@dataclass(frozen=True)
class ChildRender:
    outcome: str  # rendered, refused, MemoryError, timeout, crashed
    reason: str = ""
    message: str = ""
    seconds: float = 0.0  # inside the child, around render()
    peak_bytes: int = 0  # the child's peak resident size (VmHWM)


def render_in_child(
    source: str, context: dict, *, memory: int = GIB, timeout: float = 60
) -> ChildRender:
    """``triggers.rendering.render("", source, context)`` in a fresh interpreter whose address
    space is capped at ``memory`` and which is killed after ``timeout`` seconds."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(memory)],
            input=json.dumps([source, context]),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ChildRender("timeout", seconds=time.perf_counter() - started)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return ChildRender("crashed", message=done.stderr[-500:])
    return ChildRender(**json.loads(lines[-1]))
