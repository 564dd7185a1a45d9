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
    path("import", views.batch, name="import"),
    path("openapi.json", views.openapi, name="openapi"),
]
