from django.urls import path

from dashboard import views_lifecycle
from dashboard.experiments import views as views_experiments
from dashboard.message_templates import views as views_templates
from dashboard.rules import views as views_rules
from dashboard.sandbox import views as views_sandbox

# The namespace stays "triggers" so every URL name (triggers:rule_edit, ...) is unchanged.
app_name = "triggers"

urlpatterns = [
    path("", views_rules.rules_list, name="rules"),
    path("new/", views_rules.rule_new, name="rule_new"),
    path("preview/", views_rules.rule_preview, name="rule_preview"),
    path("trigger-fields/", views_rules.trigger_fields, name="trigger_fields"),
    path("caps-estimate/", views_rules.rule_caps_estimate, name="rule_caps_estimate"),
    path(
        "caps-estimate/<int:run_id>/",
        views_rules.rule_caps_estimate_status,
        name="rule_caps_estimate_status",
    ),
    path("sandbox/", views_sandbox.sandbox, name="sandbox"),
    path("templates/", views_templates.templates_list, name="templates"),
    path("templates/new/", views_templates.template_new, name="template_new"),
    path("templates/preview/", views_templates.template_preview, name="template_preview"),
    path("templates/<slug:slug>/", views_templates.template_edit, name="template_edit"),
    path(
        "templates/<slug:slug>/archive/",
        views_lifecycle.template_archive,
        name="template_archive",
    ),
    path(
        "templates/<slug:slug>/unarchive/",
        views_lifecycle.template_unarchive,
        name="template_unarchive",
    ),
    path("templates/<slug:slug>/delete/", views_lifecycle.template_delete, name="template_delete"),
    path("experiments/", views_experiments.experiments_list, name="experiments"),
    path("experiments/plan/", views_experiments.experiment_plan, name="experiment_plan"),
    path(
        "experiments/<slug:slug>/",
        views_experiments.experiment_results_view,
        name="experiment_results",
    ),
    path(
        "experiments/<slug:slug>/edit/", views_experiments.experiment_edit, name="experiment_edit"
    ),
    path(
        "experiments/<slug:slug>/status/",
        views_experiments.experiment_status,
        name="experiment_status",
    ),
    path(
        "experiments/<slug:slug>/ship/",
        views_experiments.experiment_ship_view,
        name="experiment_ship",
    ),
    path(
        "<slug:rule_slug>/experiments/new/",
        views_experiments.experiment_new,
        name="experiment_new",
    ),
    path("<slug:slug>/", views_rules.rule_edit, name="rule_edit"),
    path("<slug:slug>/status/", views_rules.rule_status, name="rule_status"),
    path("<slug:slug>/backtest/", views_rules.rule_backtest, name="rule_backtest"),
]
