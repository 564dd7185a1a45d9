"""The demo's trigger rules and message templates, installed through the configuration importer.

The seed's examples as real, active rules on the demo flow ``activation`` (installed by
:func:`onboarding.demo_config.install_demo_config`, which must run first): a pause of 2 minutes in
onboarding gets an in-app nudge and a pause of 3 minutes a chat prompt; an abandoned profile form
(verified the email, no completed profile within 30 minutes) an email an hour later and a second
reminder after 3 days; three sessions without progress a webinar invitation; three failed
attempts within 10 minutes a walkthrough; sharing a fifth report after activation a
congratulation. Templates read the traits :mod:`onboarding.demo` sends with ``identify``
(``first_name``, ``plan``), always with a default. Installing twice changes nothing.
"""

from __future__ import annotations

from onboarding.configfile.document import ImportResult, import_config

DEMO_RULES = """\
templates:
  - slug: pause-nudge
    channel: in_app
    body: |
      Still with us, {{ first_name | default: 'there' }}? You're a couple of steps away from your
      first project. Pick up where you left off: {{ 'https://app.example.com/onboarding' }}
  - slug: chat-prompt
    channel: in_app
    body: |
      Hi {{ first_name | default: 'there' }} 👋 Looks like you paused. Got a question about
      setting things up? Our team is online; reply here and a real person will answer.
  - slug: profile-reminder
    channel: email
    subject: "{{ first_name | default: 'Hi' }}, your profile is almost done"
    body: |
      Hi {{ first_name | default: 'there' }},

      You verified your email but didn't finish your profile. It takes about two minutes, and a
      complete profile lets your teammates find you and unlocks project templates.

      Finish your profile: {{ 'https://app.example.com/settings/profile' }}

      The Onramp team
  - slug: profile-last-reminder
    channel: email
    subject: "Still interested, {{ first_name | default: 'there' }}?"
    body: |
      Hi {{ first_name | default: 'there' }},

      Your workspace is ready and waiting: all that's left is your profile. If something got in the
      way, just reply to this email and tell us; we read every answer.

      Complete your profile: {{ 'https://app.example.com/settings/profile' }}

      The Onramp team
  - slug: webinar-invite
    channel: email
    subject: "{{ first_name | default: 'Hi' }}, join a live 30-minute tour of Onramp"
    body: |
      Hi {{ first_name | default: 'there' }},

      We noticed you've dropped by a few times without getting much further. Getting started is
      easier with a guide: join our free live walkthrough this Thursday at 17:00 UTC, ask anything,
      and leave with your first project set up.

      Save your seat: {{ 'https://app.example.com/webinars/getting-started' }}

      The Onramp team
  - slug: failure-walkthrough
    channel: in_app
    body: |
      That didn't work, did it, {{ first_name | default: 'there' }}? Here's a 90-second
      walkthrough that shows the usual fixes: {{ 'https://app.example.com/help/walkthrough' }}
  - slug: reports-congrats
    channel: in_app
    body: |
      Five reports shared, {{ first_name | default: 'there' }}! 🎉 Your team is in the loop. Tip:
      schedule a report to go out every Monday from the Share menu.
rules:
  - slug: pause-2m-nudge
    name: Paused 2 minutes in onboarding, in-app nudge
    status: active
    trigger: {kind: inactive_in_flow, flow: activation, minutes: 2}
    follow_ups:
      - {channel: in_app, template: pause-nudge, delay: 0s}
    exit_when: progressed
    reentry: {once_per: 1d}
    priority: 20
  - slug: pause-3m-chat
    name: Paused 3 minutes in onboarding, chat prompt
    status: active
    trigger: {kind: inactive_in_flow, flow: activation, minutes: 3}
    follow_ups:
      - {channel: in_app, template: chat-prompt, delay: 0s}
    exit_when: progressed
    reentry: {once_per: 1d}
    priority: 15
  - slug: profile-form-abandoned
    name: Profile form abandoned, email reminders
    status: active
    trigger: {kind: step_abandoned, flow: activation, did: 2, missing: 3, within: 30m}
    follow_ups:
      - {channel: email, template: profile-reminder, delay: 1h}
      - {channel: email, template: profile-last-reminder, delay: 3d}
    exit_when: progressed
    reentry: once
    priority: 30
    quiet_hours: {start: "21:00", end: "08:00"}
  - slug: sessions-without-progress
    name: Three sessions without progress, webinar invitation
    status: active
    trigger: {kind: inactive_sessions, flow: activation, sessions: 3}
    follow_ups:
      - {channel: email, template: webinar-invite, delay: 0s}
    exit_when: progressed
    reentry: once
    priority: 10
    quiet_hours: {start: "21:00", end: "08:00"}
  - slug: repeated-failures
    name: Three failed attempts, walkthrough
    status: active
    trigger: {kind: repeated_event, event: Task Failed, times: 3, within: 10m}
    follow_ups:
      - {channel: in_app, template: failure-walkthrough, delay: 0s}
    exit_when: never
    reentry: {once_per: 1d}
    priority: 25
  - slug: reports-milestone
    name: Fifth report shared after activation, congratulations
    status: active
    trigger: {kind: milestone, flow: activation, event: Report Shared, times: 5}
    follow_ups:
      - {channel: in_app, template: reports-congrats, delay: 0s}
    exit_when: never
    reentry: once
    priority: 5
"""


def install_demo_rules() -> ImportResult:
    """Create (or bring back to the demo's definition) the demo templates and active rules."""
    return import_config(DEMO_RULES)
