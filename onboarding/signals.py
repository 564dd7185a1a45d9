"""Signals that other apps use to keep their own per-person state consistent.

``onboarding`` imports neither ``dashboard`` nor ``triggers``; when it merges people, apps that keep
rows per person (flow progress, enrollments, messages) move them by listening here.
"""

from django.dispatch import Signal

# Sent inside the merging transaction, before the merged people are deleted.
# Arguments: ``into`` (person id that survives) and ``merged`` (list of person ids).
people_merged = Signal()
