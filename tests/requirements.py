"""What a test needs from the machine, and what happens when it is not there.

On a developer's laptop a test whose service or program is missing skips with the reason; in CI
(``CI`` set) it fails loudly instead, because CI must run every test.
"""

from __future__ import annotations

import os

import pytest

IN_CI = bool(os.environ.get("CI"))


def missing(what: str, reason: str, remedy: str = "start it in .ci/run") -> None:
    """Skip (laptop) or fail (CI) a test that cannot find ``what``; ``remedy`` says what CI's
    script must do about it (start a service, install a package)."""
    message = f"{what} is required for this test: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI must run every test: {remedy})")
    pytest.skip(message)
