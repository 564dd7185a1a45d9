from django.urls import path

from . import views

app_name = "backtests"

urlpatterns = [
    path("<int:run_id>/", views.backtest_status, name="status"),
]
