from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard.auth import ThrottledLoginView
from dashboard.views import healthz

urlpatterns = [
    path("v1/in-app/", include("triggers.api.urls")),
    path("v1/", include("onboarding.api.urls")),
    path("healthz", healthz, name="healthz"),
    path("t/", include("triggers.urls_links")),
    path("login/", ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("demo/widget/", include("triggers.api.urls_demo")),
    path("rules/backtests/", include("dashboard.backtests.urls")),
    path("rules/", include("dashboard.rules.urls")),
    path("", include("dashboard.urls")),
]
