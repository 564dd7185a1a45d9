"""The roles matrix: every URL pattern × every role × GET and POST, against one reviewed table.

The URLs come from the resolver (``routes.ROUTES``), so a URL added later is requested here and
fails ``test_every_url_is_in_the_table`` until its row is written. Each row gives the expected
outcome per role, GET then POST (an empty form: enough to reach the permission check, never a
valid write), in the order of ``ROLES``:

- a status code (200, 400, 403, 404, 405…; 302 is a redirect that is *not* to a login page),
- ``L``: a redirect to a login page (``/login/?next=…`` or the admin's login).

The roles are the groups of ``dashboard/permissions.py`` (docs/security.md shows this table as the
roles matrix), plus anonymous visitors, a superuser and a logged-in user in no group; the columns
are anonymous, viewer, growth, experiment owner, support (staff), superuser, no group. Objects are
created once for the module; each role's requests run inside one test's transaction.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.test import Client
from django.utils import timezone

from onboarding.models import OnboardingFlow, Person, Segment, Step
from onboarding.services.gdpr import person_erase
from onboarding.services.sources import source_create
from tests.conftest import basic_auth
from triggers.models import BacktestRun, DecisionLog, Enrollment, Message, ReviewItem
from triggers.services.experiments import experiment_save
from triggers.services.rules import rule_save
from triggers.services.templates import template_save

from .routes import ROUTES, url_for

ROLES = ("anonymous", "viewer", "growth", "owner", "support", "superuser", "nobody")
GROUPS = {
    "viewer": ["viewer"],
    "growth": ["growth"],
    "owner": ["experiment owner"],
    "support": ["support"],
    "nobody": [],
}

# fmt: off
EXPECTED: dict[str, str] = {
    # Public, and the write-key API (sessions are worth nothing there: 401)
    # GET / POST:                                                   ano vwr grw own sup  su non   ano vwr grw own sup  su non
    "in_app_api:messages":                                         "401 401 401 401 401 401 401 | 405 405 405 405 405 405 405",
    "in_app_api:outcome":                                          "405 405 405 405 405 405 405 | 401 401 401 401 401 401 401",
    "api:track":                                                   "405 405 405 405 405 405 405 | 401 401 401 401 401 401 401",
    "api:identify":                                                "405 405 405 405 405 405 405 | 401 401 401 401 401 401 401",
    "api:page":                                                    "405 405 405 405 405 405 405 | 401 401 401 401 401 401 401",
    "api:screen":                                                  "405 405 405 405 405 405 405 | 401 401 401 401 401 401 401",
    "api:alias":                                                   "405 405 405 405 405 405 405 | 401 401 401 401 401 401 401",
    "api:group":                                                   "405 405 405 405 405 405 405 | 401 401 401 401 401 401 401",
    "api:batch":                                                   "405 405 405 405 405 405 405 | 401 401 401 401 401 401 401",
    "api:import":                                                  "405 405 405 405 405 405 405 | 401 401 401 401 401 401 401",
    "api:t":                                                       "405 405 405 405 405 405 405 | 401 401 401 401 401 401 401",
    "api:i":                                                       "405 405 405 405 405 405 405 | 401 401 401 401 401 401 401",
    "api:p":                                                       "405 405 405 405 405 405 405 | 401 401 401 401 401 401 401",
    "api:s":                                                       "405 405 405 405 405 405 405 | 401 401 401 401 401 401 401",
    "api:a":                                                       "405 405 405 405 405 405 405 | 401 401 401 401 401 401 401",
    "api:g":                                                       "405 405 405 405 405 405 405 | 401 401 401 401 401 401 401",
    "api:b":                                                       "405 405 405 405 405 405 405 | 401 401 401 401 401 401 401",
    "api:project-settings":                                        "200 200 200 200 200 200 200 | 405 405 405 405 405 405 405",
    "api:openapi":                                                 "200 200 200 200 200 200 200 | 405 405 405 405 405 405 405",
    "healthz":                                                     "200 200 200 200 200 200 200 | 405 405 405 405 405 405 405",
    "metrics":                                                     "200 200 200 200 200 200 200 | 405 405 405 405 405 405 405",
    "links:open":                                                  "200 200 200 200 200 200 200 | 405 405 405 405 405 405 405",
    "links:click":                                                 "404 404 404 404 404 404 404 | 405 405 405 405 405 405 405",
    "links:unsubscribe":                                           "404 404 404 404 404 404 404 | 404 404 404 404 404 404 404",
    "login":                                                       "200 200 200 200 200 200 200 | 200 200 200 200 200 200 200",
    "logout":                                                      "405 405 405 405 405 405 405 |   L   L   L   L   L   L   L",
    # The growth dashboard: read with dashboard.view_dashboard; writes need their model permission
    # GET / POST:                                                   ano vwr grw own sup  su non   ano vwr grw own sup  su non
    "widget_demo:widget":                                          "  L 200 200 200 403 200 403 |   L 200 200 200 403 200 403",
    "backtests:status":                                            "  L 200 200 200 403 200 403 | 405 405 405 405 405 405 405",
    "backtests:report":                                            "  L 200 200 200 403 200 403 | 405 405 405 405 405 405 405",
    "backtests:people_csv":                                        "  L 404 404 404 403 404 403 | 405 405 405 405 405 405 405",
    "triggers:rules":                                              "  L 200 200 200 403 200 403 |   L 405 405 405 403 405 403",
    "triggers:rule_new":                                           "  L 200 200 200 403 200 403 |   L 403 200 403 403 200 403",
    "triggers:rule_preview":                                       "  L 405 405 405 403 405 403 |   L 403 200 403 403 200 403",
    "triggers:trigger_fields":                                     "  L 200 200 200 403 200 403 |   L 405 405 405 403 405 403",
    "triggers:sandbox":                                            "  L 200 200 200 403 200 403 |   L 200 200 200 403 200 403",
    "triggers:templates":                                          "  L 200 200 200 403 200 403 |   L 405 405 405 403 405 403",
    "triggers:template_new":                                       "  L 200 200 200 403 200 403 |   L 403 200 403 403 200 403",
    "triggers:template_preview":                                   "  L 405 405 405 403 405 403 |   L 403 200 403 403 200 403",
    "triggers:template_edit":                                      "  L 200 200 200 403 200 403 |   L 403 200 403 403 200 403",
    "triggers:template_archive":                                   "  L 405 405 405 403 405 403 |   L 403 409 403 403 409 403",
    "triggers:template_unarchive":                                 "  L 405 405 405 403 405 403 |   L 403 302 403 403 302 403",
    "triggers:template_delete":                                    "  L 405 405 405 403 405 403 |   L 403 409 403 403 409 403",
    "triggers:experiments":                                        "  L 200 200 200 403 200 403 |   L 405 405 405 403 405 403",
    "triggers:experiment_plan":                                    "  L 405 405 405 403 405 403 |   L 403 404 403 403 404 403",
    "triggers:experiment_results":                                 "  L 200 200 200 403 200 403 |   L 405 405 405 403 405 403",
    "triggers:experiment_edit":                                    "  L 200 200 200 403 200 403 |   L 403 200 403 403 200 403",
    "triggers:experiment_status":                                  "  L 405 405 405 403 405 403 |   L 403 403 302 403 302 403",
    "triggers:experiment_ship":                                    "  L 405 405 405 403 405 403 |   L 403 403 302 403 302 403",
    "triggers:experiment_new":                                     "  L 200 200 200 403 200 403 |   L 403 200 403 403 200 403",
    "triggers:rule_edit":                                          "  L 200 200 200 403 200 403 |   L 403 200 403 403 200 403",
    "triggers:rule_status":                                        "  L 405 405 405 403 405 403 |   L 403 302 403 403 302 403",
    "triggers:rule_backtest":                                      "  L 405 405 405 403 405 403 |   L 403 302 403 403 302 403",
    "triggers:rule_caps_estimate":                                 "  L 405 405 405 403 405 403 |   L 403 200 403 403 200 403",
    "triggers:rule_caps_estimate_status":                          "  L 200 200 200 403 200 403 |   L 405 405 405 403 405 403",
    "dashboard:overview":                                          "  L 200 200 200 302 200 403 |   L 405 405 405 403 405 403",
    "dashboard:flows":                                             "  L 200 200 200 403 200 403 |   L 405 405 405 403 405 403",
    "dashboard:flow_new":                                          "  L 200 200 200 403 200 403 |   L 403 200 403 403 200 403",
    "dashboard:flow_edit":                                         "  L 200 200 200 403 200 403 |   L 403 200 403 403 200 403",
    "dashboard:flow_archive":                                      "  L 405 405 405 403 405 403 |   L 403 409 403 403 409 403",
    "dashboard:flow_unarchive":                                    "  L 405 405 405 403 405 403 |   L 403 302 403 403 302 403",
    "dashboard:flow_delete":                                       "  L 405 405 405 403 405 403 |   L 403 409 403 403 409 403",
    "dashboard:funnel":                                            "  L 200 200 200 403 200 403 |   L 405 405 405 403 405 403",
    "dashboard:funnel_people":                                     "  L 200 200 200 403 200 403 |   L 405 405 405 403 405 403",
    "dashboard:funnel_people_csv":                                 "  L 200 200 200 403 200 403 |   L 405 405 405 403 405 403",
    "dashboard:funnel_explain":                                    "  L 200 200 200 403 200 403 |   L 405 405 405 403 405 403",
    "dashboard:funnel_explain_segment":                            "  L 405 405 405 403 405 403 |   L 403 400 403 403 400 403",
    "dashboard:segments":                                          "  L 200 200 200 403 200 403 |   L 405 405 405 403 405 403",
    "dashboard:segment_new":                                       "  L 200 200 200 403 200 403 |   L 403 200 403 403 200 403",
    "dashboard:segment_preview":                                   "  L 405 405 405 403 405 403 |   L 403 200 403 403 200 403",
    "dashboard:segment_condition_row":                             "  L 405 405 405 403 405 403 |   L 403 200 403 403 200 403",
    "dashboard:segment_edit":                                      "  L 200 200 200 403 200 403 |   L 403 200 403 403 200 403",
    "dashboard:segment_archive":                                   "  L 405 405 405 403 405 403 |   L 403 302 403 403 302 403",
    "dashboard:segment_unarchive":                                 "  L 405 405 405 403 405 403 |   L 403 302 403 403 302 403",
    "dashboard:segment_delete":                                    "  L 405 405 405 403 405 403 |   L 403 200 403 403 200 403",
    "dashboard:people":                                            "  L 200 200 200 200 200 403 |   L 405 405 405 405 405 403",
    "dashboard:person":                                            "  L 200 200 200 200 200 403 |   L 405 405 405 405 405 403",
    "dashboard:kpis":                                              "  L 200 200 200 403 200 403 |   L 405 405 405 403 405 403",
    "dashboard:kpis_refresh":                                      "  L 405 405 405 403 405 403 |   L 302 302 302 403 302 403",
    "dashboard:support":                                           "  L 403 403 403 200 200 403 |   L 403 403 403 405 405 403",
    "dashboard:operations":                                        "  L 403 403 403 403 200 403 |   L 403 403 403 403 405 403",
    "dashboard:settings":                                          "  L 200 200 200 403 200 403 |   L 403 400 403 403 400 403",
    # The admin: staff only (support, superusers); Django checks the model permissions
    # GET / POST:                                                   ano vwr grw own sup  su non   ano vwr grw own sup  su non
    "admin:index":                                                 "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:login":                                                 "200 200 200 200 302 302 200 | 200 200 200 200 200 200 200",
    "admin:logout":                                                "302 302 302 302 405 405 302 | 302 302 302 302   L   L 302",
    "admin:password_change":                                       "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:password_change_done":                                  "  L   L   L   L 200 200   L |   L   L   L   L 405 405   L",
    "admin:autocomplete":                                          "  L   L   L   L 403 403   L |   L   L   L   L 405 405   L",
    "admin:jsi18n":                                                "  L   L   L   L 200 200   L |   L   L   L   L 405 405   L",
    "admin:view_on_site":                                          "  L   L   L   L 404 404   L |   L   L   L   L 404 404   L",
    "admin:auth_group_changelist":                                 "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:auth_group_add":                                        "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:auth_group_history":                                    "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:auth_group_delete":                                     "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:auth_group_change":                                     "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin/auth/group/<path:object_id>/":                          "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:auth_user_password_change":                             "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:auth_user_changelist":                                  "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:auth_user_add":                                         "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:auth_user_history":                                     "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:auth_user_delete":                                      "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:auth_user_change":                                      "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin/auth/user/<path:object_id>/":                           "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:django_celery_beat_periodictask_changelist":            "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:django_celery_beat_periodictask_add":                   "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:django_celery_beat_periodictask_history":               "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:django_celery_beat_periodictask_delete":                "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:django_celery_beat_periodictask_change":                "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin/django_celery_beat/periodictask/<path:object_id>/":     "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:django_celery_beat_clockedschedule_changelist":         "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:django_celery_beat_clockedschedule_add":                "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:django_celery_beat_clockedschedule_history":            "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:django_celery_beat_clockedschedule_delete":             "  L   L   L   L 403 302   L |   L   L   L   L 403 302   L",
    "admin:django_celery_beat_clockedschedule_change":             "  L   L   L   L 403 302   L |   L   L   L   L 403 302   L",
    "admin/django_celery_beat/clockedschedule/<path:object_id>/":  "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:django_celery_beat_crontabschedule_changelist":         "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:django_celery_beat_crontabschedule_add":                "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:django_celery_beat_crontabschedule_history":            "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:django_celery_beat_crontabschedule_delete":             "  L   L   L   L 403 302   L |   L   L   L   L 403 302   L",
    "admin:django_celery_beat_crontabschedule_change":             "  L   L   L   L 403 302   L |   L   L   L   L 403 302   L",
    "admin/django_celery_beat/crontabschedule/<path:object_id>/":  "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:django_celery_beat_solarschedule_changelist":           "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:django_celery_beat_solarschedule_add":                  "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:django_celery_beat_solarschedule_history":              "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:django_celery_beat_solarschedule_delete":               "  L   L   L   L 403 302   L |   L   L   L   L 403 302   L",
    "admin:django_celery_beat_solarschedule_change":               "  L   L   L   L 403 302   L |   L   L   L   L 403 302   L",
    "admin/django_celery_beat/solarschedule/<path:object_id>/":    "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:django_celery_beat_intervalschedule_changelist":        "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:django_celery_beat_intervalschedule_add":               "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:django_celery_beat_intervalschedule_history":           "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:django_celery_beat_intervalschedule_delete":            "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:django_celery_beat_intervalschedule_change":            "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin/django_celery_beat/intervalschedule/<path:object_id>/": "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:onboarding_source_changelist":                          "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:onboarding_source_add":                                 "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:onboarding_source_history":                             "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:onboarding_source_delete":                              "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:onboarding_source_change":                              "  L   L   L   L 200 200   L |   L   L   L   L 403 200   L",
    "admin/onboarding/source/<path:object_id>/":                   "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:onboarding_erasure_changelist":                         "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:onboarding_erasure_add":                                "  L   L   L   L 403 403   L |   L   L   L   L 403 403   L",
    "admin:onboarding_erasure_history":                            "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:onboarding_erasure_delete":                             "  L   L   L   L 403 403   L |   L   L   L   L 403 403   L",
    "admin:onboarding_erasure_change":                             "  L   L   L   L 200 200   L |   L   L   L   L 403 403   L",
    "admin/onboarding/erasure/<path:object_id>/":                  "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:onboarding_event_changelist":                           "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:onboarding_event_add":                                  "  L   L   L   L 403 403   L |   L   L   L   L 403 403   L",
    "admin:onboarding_event_history":                              "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:onboarding_event_delete":                               "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:onboarding_event_change":                               "  L   L   L   L 200 200   L |   L   L   L   L 403 403   L",
    "admin/onboarding/event/<path:object_id>/":                    "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:onboarding_failedevent_changelist":                     "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:onboarding_failedevent_add":                            "  L   L   L   L 403 403   L |   L   L   L   L 403 403   L",
    "admin:onboarding_failedevent_history":                        "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:onboarding_failedevent_delete":                         "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:onboarding_failedevent_change":                         "  L   L   L   L 200 200   L |   L   L   L   L 403 403   L",
    "admin/onboarding/failedevent/<path:object_id>/":              "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:triggers_reviewitem_edit_and_send":                     "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:triggers_reviewitem_changelist":                        "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:triggers_reviewitem_add":                               "  L   L   L   L 403 403   L |   L   L   L   L 403 403   L",
    "admin:triggers_reviewitem_history":                           "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:triggers_reviewitem_delete":                            "  L   L   L   L 403 403   L |   L   L   L   L 403 403   L",
    "admin:triggers_reviewitem_change":                            "  L   L   L   L 200 200   L |   L   L   L   L 302 302   L",
    "admin/triggers/reviewitem/<path:object_id>/":                 "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:triggers_message_changelist":                           "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:triggers_message_add":                                  "  L   L   L   L 403 403   L |   L   L   L   L 403 403   L",
    "admin:triggers_message_history":                              "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:triggers_message_delete":                               "  L   L   L   L 403 403   L |   L   L   L   L 403 403   L",
    "admin:triggers_message_change":                               "  L   L   L   L 200 200   L |   L   L   L   L 403 403   L",
    "admin/triggers/message/<path:object_id>/":                    "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:triggers_decisionlog_changelist":                       "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:triggers_decisionlog_add":                              "  L   L   L   L 403 403   L |   L   L   L   L 403 403   L",
    "admin:triggers_decisionlog_history":                          "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:triggers_decisionlog_delete":                           "  L   L   L   L 403 403   L |   L   L   L   L 403 403   L",
    "admin:triggers_decisionlog_change":                           "  L   L   L   L 200 200   L |   L   L   L   L 403 403   L",
    "admin/triggers/decisionlog/<path:object_id>/":                "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:triggers_auditlog_changelist":                          "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:triggers_auditlog_add":                                 "  L   L   L   L 403 403   L |   L   L   L   L 403 403   L",
    "admin:triggers_auditlog_history":                             "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:triggers_auditlog_delete":                              "  L   L   L   L 403 403   L |   L   L   L   L 403 403   L",
    "admin:triggers_auditlog_change":                              "  L   L   L   L 200 200   L |   L   L   L   L 403 403   L",
    "admin/triggers/auditlog/<path:object_id>/":                   "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:triggers_rule_changelist":                              "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:triggers_rule_add":                                     "  L   L   L   L 403 403   L |   L   L   L   L 403 403   L",
    "admin:triggers_rule_history":                                 "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:triggers_rule_delete":                                  "  L   L   L   L 403 403   L |   L   L   L   L 403 403   L",
    "admin:triggers_rule_change":                                  "  L   L   L   L 200 200   L |   L   L   L   L 403 403   L",
    "admin/triggers/rule/<path:object_id>/":                       "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:triggers_messagetemplate_changelist":                   "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:triggers_messagetemplate_add":                          "  L   L   L   L 403 403   L |   L   L   L   L 403 403   L",
    "admin:triggers_messagetemplate_history":                      "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:triggers_messagetemplate_delete":                       "  L   L   L   L 403 403   L |   L   L   L   L 403 403   L",
    "admin:triggers_messagetemplate_change":                       "  L   L   L   L 200 200   L |   L   L   L   L 403 403   L",
    "admin/triggers/messagetemplate/<path:object_id>/":            "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:onboarding_person_changelist":                          "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:onboarding_person_add":                                 "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:onboarding_person_history":                             "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin:onboarding_person_delete":                              "  L   L   L   L 403 200   L |   L   L   L   L 403 200   L",
    "admin:onboarding_person_change":                              "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin/onboarding/person/<path:object_id>/":                   "  L   L   L   L 302 302   L |   L   L   L   L 302 302   L",
    "admin:app_list":                                              "  L   L   L   L 200 200   L |   L   L   L   L 200 200   L",
    "admin/(?P<url>.*)$":                                          "  L   L   L   L 404 404   L |   L   L   L   L 404 404   L",
}
# fmt: on


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """Users for every role and one object behind every path parameter, rolled back at the end."""
    with django_db_blocker.unblock(), transaction.atomic():
        from django.apps import apps

        from dashboard.permissions import install_groups

        install_groups(apps)
        users = {}
        for role, groups in GROUPS.items():
            user = User.objects.create_user(role, password="pw", is_staff=role == "support")
            user.groups.set(Group.objects.filter(name__in=groups))
            users[role] = user
        users["superuser"] = User.objects.create_superuser("superuser", password="pw")
        values = _objects(users)
        yield users, values
        transaction.set_rollback(True)


def _objects(users: dict[str, User]) -> dict[str, str]:
    key = source_create(name="web").write_key
    api = Client(HTTP_AUTHORIZATION=basic_auth(key))
    identify = {"type": "identify", "userId": "probe", "traits": {"email": "p@example.com"}}
    assert api.post("/v1/identify", identify, content_type="application/json").status_code == 200
    bad = {"type": "track", "userId": "probe"}  # no event name: a FailedEvent row
    assert api.post("/v1/track", bad, content_type="application/json").status_code == 400
    gone = {"type": "identify", "userId": "gone"}
    assert api.post("/v1/identify", gone, content_type="application/json").status_code == 200
    person_erase(Person.objects.get(external_id="gone"), actor=users["support"])
    person = Person.objects.get(external_id="probe")

    flow = OnboardingFlow.objects.create(slug="probe", name="Probe", window_seconds=86400)
    Step.objects.create(flow=flow, position=1, name="Start", event_name="Signed Up")
    Step.objects.create(flow=flow, position=2, name="Done", event_name="Done")
    Segment.objects.create(
        slug="probe", name="Probe", definition={"match": "all", "conditions": []}
    )
    template, _ = template_save(slug="probe", channel="email", subject="Hi", body="Hi")
    definition = {
        "trigger": {"kind": "inactive_in_flow", "flow": "probe", "minutes": 5},
        "follow_ups": [{"channel": "email", "template": "probe", "delay": "0s"}],
    }
    rule, _ = rule_save(slug="probe", name="Probe", definition=definition)
    experiment_save(
        slug="probe",
        rule_slug="probe",
        variants=[{"name": "a", "weight": 50}, {"name": "b", "weight": 50, "holdout": True}],
        metric={"flow": "probe", "completed_within": "1d"},
    )
    now = timezone.now()
    run = BacktestRun.objects.create(
        rule=rule, definition=definition, since=now - timedelta(days=1), until=now
    )
    version = rule.current_version
    enrollment = Enrollment.objects.create(
        rule=rule, rule_version=version, person=person, occurrence_key="o", enrolled_at=now
    )
    message = Message.objects.create(
        idempotency_key="probe-0",
        enrollment=enrollment,
        rule=rule,
        rule_version=version,
        person=person,
        step=0,
        channel="email",
        template=template,
        due_at=now,
        subject="Hi",
        body="Hi",
    )
    item = ReviewItem.objects.create(message=message, reason="provider_rejected", detail="x")
    DecisionLog.objects.create(at=now, person=person, rule=rule, message=message, outcome="sent")
    return {
        "slug": "probe",
        "rule_slug": "probe",
        "pk": str(person.pk),
        "run_id": str(run.pk),
        "message_id": str(message.pk),
        "item_id": str(item.pk),
        "outcome": "seen",
        "token": "not-a-valid-token",
        "app_label": "onboarding",
        "content_type_id": str(ContentType.objects.get_for_model(Person).pk),
        "url": "no-such-page/",
        "id": str(users["growth"].pk),
        "write_key": key,  # analytics.js's settings document of a real source
    }


def key(route) -> str:
    """A route's row: its name, or its pattern when unnamed (the admin's object redirects)."""
    return route.pattern if route.name.endswith("<unnamed>") else route.name


def _outcome(response) -> str:
    location = response.get("Location", "") or response.get("HX-Redirect", "")
    if response.status_code == 302 and location.startswith(("/login/", "/admin/login/")):
        return "L"
    return str(response.status_code)


def _client(role: str, users: dict[str, User]) -> Client:
    client = Client(raise_request_exception=False)
    if role != "anonymous":
        client.force_login(users[role])
    return client


def observe(role: str, world) -> dict[str, tuple[str, str]]:
    """What each URL answers ``role``, GET and POST."""
    users, values = world
    client = _client(role, users)
    seen = {}
    for route in ROUTES:
        url = url_for(route, values)
        codes = []
        for method in (client.get, client.post):
            codes.append(_outcome(method(url, {})))
            if role != "anonymous" and not client.session.get("_auth_user_id"):
                client = _client(role, users)  # a logout URL logged us out: log in again
        seen[key(route)] = (codes[0], codes[1])
    return seen


def _expected(name: str, role: str) -> tuple[str, str]:
    get, post = (part.split() for part in EXPECTED[name].split("|"))
    index = ROLES.index(role)
    return get[index], post[index]


def test_every_url_is_in_the_table():
    names = {key(route) for route in ROUTES}
    assert len(names) == len(ROUTES), "two patterns share a name: give them distinct names"
    missing = sorted(names - set(EXPECTED))
    assert not missing, f"add a row for each new URL to EXPECTED: {missing}"
    assert not set(EXPECTED) - names, f"rows for URLs that are gone: {set(EXPECTED) - names}"
    for name, row in EXPECTED.items():
        get, post = (part.split() for part in row.split("|"))
        assert len(get) == len(post) == len(ROLES), name


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_every_url_answers_each_role_as_the_table_says(role, world):
    problems = []
    for name, (get, post) in observe(role, world).items():
        want = _expected(name, role) if name in EXPECTED else ("?", "?")
        if (get, post) != want:
            problems.append(f"{name}: GET {get} POST {post}, expected GET {want[0]} POST {want[1]}")
    assert not problems, f"{role}:\n" + "\n".join(problems)
