"""Keeps flow progress right when people are merged (their events move to the survivor)."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from onboarding.signals import people_merged

from .progress import flow_specs, refresh_progress


@receiver(people_merged, dispatch_uid="onboarding.flows.refresh_merged_progress")
def refresh_merged_progress(sender: Any, *, into: int, merged: list[int], **kwargs: Any) -> None:
    refresh_progress(flow_specs(), [into])
