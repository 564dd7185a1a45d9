from django.urls import path

from . import demo

app_name = "widget_demo"

urlpatterns = [path("", demo.widget_demo, name="widget")]
