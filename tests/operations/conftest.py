"""The trigger tests' fixtures (a flow, templates, a timeline of events at pinned times)."""

from tests.triggers.conftest import flow, templates, timeline  # noqa: F401
