from django.urls import path

from . import views

app_name = "in_app_api"

urlpatterns = [
    path("messages", views.messages, name="messages"),
    path("messages/<str:message_id>/<str:outcome>", views.outcome, name="outcome"),
]
