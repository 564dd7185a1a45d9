from django.urls import path

from . import (
    views,
    views_flows,
    views_funnel_explain,
    views_funnels,
    views_kpis,
    views_lifecycle,
    views_operations,
    views_people,
    views_segments,
    views_settings,
    views_support,
)

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("flows/", views_funnels.flows_list, name="flows"),
    path("flows/new/", views_flows.flow_new, name="flow_new"),
    path("flows/<slug:slug>/edit/", views_flows.flow_edit, name="flow_edit"),
    path("flows/<slug:slug>/archive/", views_lifecycle.flow_archive, name="flow_archive"),
    path("flows/<slug:slug>/unarchive/", views_lifecycle.flow_unarchive, name="flow_unarchive"),
    path("flows/<slug:slug>/delete/", views_lifecycle.flow_delete, name="flow_delete"),
    path("flows/<slug:slug>/funnel/", views_funnels.funnel, name="funnel"),
    path(
        "flows/<slug:slug>/funnel/people/",
        views_funnels.funnel_people_page,
        name="funnel_people",
    ),
    path(
        "flows/<slug:slug>/funnel/people.csv",
        views_funnels.funnel_people_csv,
        name="funnel_people_csv",
    ),
    path(
        "flows/<slug:slug>/funnel/explain/",
        views_funnel_explain.funnel_explain,
        name="funnel_explain",
    ),
    path(
        "flows/<slug:slug>/funnel/explain/segment/",
        views_funnel_explain.funnel_explain_segment,
        name="funnel_explain_segment",
    ),
    path("segments/", views_segments.segments_list, name="segments"),
    path("segments/new/", views_segments.segment_new, name="segment_new"),
    path("segments/preview/", views_segments.segment_preview, name="segment_preview"),
    path("segments/condition/", views_segments.condition_row, name="segment_condition_row"),
    path("segments/<slug:slug>/edit/", views_segments.segment_edit, name="segment_edit"),
    path("segments/<slug:slug>/archive/", views_lifecycle.segment_archive, name="segment_archive"),
    path(
        "segments/<slug:slug>/unarchive/",
        views_lifecycle.segment_unarchive,
        name="segment_unarchive",
    ),
    path("segments/<slug:slug>/delete/", views_lifecycle.segment_delete, name="segment_delete"),
    path("people/", views_people.people_search, name="people"),
    path("people/<int:pk>/", views_people.person_detail, name="person"),
    path("kpis/", views_kpis.kpis_overview, name="kpis"),
    path("kpis/refresh/", views_kpis.kpis_refresh, name="kpis_refresh"),
    path("support/", views_support.support_home, name="support"),
    path("operations/", views_operations.operations_page, name="operations"),
    path("settings/", views_settings.workspace_settings, name="settings"),
]
