import pytest
@pytest.fixture(autouse=True)
def _groups(db):
    from django.apps import apps
    from dashboard.permissions import install_groups
    install_groups(apps)
