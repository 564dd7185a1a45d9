from django.urls import path

from . import views

app_name = "api"

urlpatterns = [
    path("track", views.track, name="track"),
    path("identify", views.identify, name="identify"),
    path("page", views.page, name="page"),
    path("screen", views.screen, name="screen"),
    path("alias", views.alias, name="alias"),
    path("group", views.group, name="group"),
    path("batch", views.batch, name="batch"),
    path("import", views.history_import, name="import"),
    path("openapi.json", views.openapi, name="openapi"),
    # Segment's browser library (analytics.js, @segment/analytics-next): its settings document,
    # and the one-letter paths it posts to ({apiHost}/t, /i, ...; /b in its batching mode).
    path("projects/<str:write_key>/settings", views.project_settings, name="project-settings"),
    path("t", views.track, name="t"),
    path("i", views.identify, name="i"),
    path("p", views.page, name="p"),
    path("s", views.screen, name="s"),
    path("a", views.alias, name="a"),
    path("g", views.group, name="g"),
    path("b", views.batch, name="b"),
]
