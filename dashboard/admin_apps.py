"""The admin app, installed on a site whose login shares the dashboard's lockout.

``INSTALLED_APPS`` names this instead of ``django.contrib.admin`` (Django's documented way to
replace the default admin site). Loading the site also connects the lockout's signal receivers
(``dashboard/auth.py``).
"""

from django.contrib.admin.apps import AdminConfig


class OnrampAdminConfig(AdminConfig):
    default_site = "dashboard.auth.ThrottledAdminSite"
