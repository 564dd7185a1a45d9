from django.urls import path

from . import views_links

app_name = "links"

urlpatterns = [
    path("o/<str:token>.gif", views_links.open_pixel, name="open"),
    path("c", views_links.click, name="click"),
    path("u/<str:token>", views_links.unsubscribe, name="unsubscribe"),
]
