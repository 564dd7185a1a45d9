"""Signals that other apps use to keep their own per-person state consistent.

``onboarding`` imports neither ``dashboard`` nor ``triggers``; when it merges, erases or exports
people, apps that keep rows per person (flow progress, enrollments, messages) move, delete or report
them by listening here.
"""

from django.dispatch import Signal

# Sent inside the merging transaction, before the merged people are deleted.
# Arguments: ``into`` (person id that survives) and ``merged`` (list of person ids).
people_merged = Signal()

# Sent inside the erasing transaction, before the person is deleted (GDPR erasure). Receivers delete
# every row they keep about the person and may return ``{table label: rows deleted}``.
# Arguments: ``person`` (the Person), ``actor`` (the user erasing, or None).
person_erasing = Signal()

# Sent to collect a person's data for an export (GDPR access). Receivers return a dict of sections,
# e.g. ``{"messages": [...]}``, merged into the export. Arguments: ``person``.
person_exporting = Signal()
