from django.urls import path

from . import views

app_name = "backtests"

urlpatterns = [
    path("<int:run_id>/", views.backtest_status, name="status"),
    path("<int:run_id>/report/", views.backtest_report, name="report"),
    path("<int:run_id>/people.csv", views.backtest_people_csv, name="people_csv"),
]
