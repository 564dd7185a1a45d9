"""The demo's flow and segments, installed through the configuration importer.

Names match :mod:`onboarding.demo`: its journeys send Signed Up (properties ``device``, ``source``,
``plan``) → Email Verified → Profile Completed (``completionPercentage``, 100 when done) → Project
Created → Teammate Invited, and ``identify`` sets the traits ``source`` and ``signup_date``.
Installing twice changes nothing.
"""

from __future__ import annotations

from onboarding.configfile.document import ImportResult, import_config

DEMO_CONFIG = """\
flows:
  - slug: activation
    name: Activation
    window: 7d
    steps:
      - {name: Signed up, event: Signed Up}
      - {name: Email verified, event: Email Verified}
      - {name: Profile completed, event: Profile Completed, where: {completionPercentage: 100}}
      - {name: Project created, event: Project Created, critical: true}
      - {name: Teammate invited, event: Teammate Invited}
segments:
  - slug: from-ads
    name: Acquired through ads
    match: all
    conditions:
      - {trait: source, op: eq, value: ads}
  - slug: mobile
    name: Signed up on mobile
    match: all
    conditions:
      - {event: Signed Up, where: {device: {op: in, value: [ios, android]}}}
  - slug: stalled-at-profile
    name: Stalled before finishing their profile
    match: all
    conditions:
      - {flow: activation, state: stalled, step: 3}
"""


def install_demo_config() -> ImportResult:
    """Create (or bring back to the demo's definition) the demo flow and segments."""
    return import_config(DEMO_CONFIG)
