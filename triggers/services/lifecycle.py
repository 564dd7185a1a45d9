"""Archive, restore and delete flows, segments and message templates; every change audited.

The rules (docs/guide-funnels.md, "Archiving and deleting"), from :mod:`.usage`:

- **Archive** hides the object from lists and pickers and keeps it readable; it is refused while a
  live place uses it (a rule that is not archived, a segment that is not archived, an experiment
  that is not stopped), so nothing that can send or be activated names an archived object.
- **Unarchive** restores it; always allowed.
- **Delete** is refused while any place uses it, history included (past messages, people's
  progress, archived rules, stopped experiments): archive keeps those readable instead.

The object is locked (``SELECT … FOR UPDATE``) while its usage is checked. A delete that a foreign
key still refuses (a message written between the check and the delete) is reported as in use,
never as an ``IntegrityError``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from onboarding.models import OnboardingFlow, Segment
from triggers.models import MessageTemplate

from .audit import audit
from .usage import Place, Usage, usage_of

Archivable = OnboardingFlow | Segment | MessageTemplate
T = TypeVar("T", OnboardingFlow, Segment, MessageTemplate)


class InUse(Exception):
    """Refused: ``places`` use the object (``action`` is "archive" or "delete")."""

    def __init__(self, action: str, usage: Usage) -> None:
        self.action = action
        self.usage = usage
        self.places = usage.live if action == "archive" else usage.places
        super().__init__(f"cannot {action}: used by {len(self.places)} place(s)")


def _locked(obj: T) -> T:
    return type(obj).objects.select_for_update().get(pk=obj.pk)


@transaction.atomic
def archive(*, obj: T, actor: Any = None, check: bool = True) -> T:
    """Archive ``obj``; raise :class:`InUse` while a live place uses it. Idempotent.

    ``check=False`` is for an import, which checked usage against the whole file beforehand.
    """
    obj = _locked(obj)
    if obj.archived_at is not None:
        return obj
    if check:
        usage = usage_of(obj)
        if not usage.can_archive:
            raise InUse("archive", usage)
    obj.archived_at = timezone.now()
    obj.save(update_fields=["archived_at", "updated_at"])
    audit(actor=actor, action="archive", obj=obj, changes={"archived": [False, True]})
    return obj


@transaction.atomic
def unarchive(*, obj: T, actor: Any = None, check: bool = True) -> T:
    """Restore ``obj`` (always allowed; ``check`` only mirrors :func:`archive`)."""
    obj = _locked(obj)
    if obj.archived_at is None:
        return obj
    obj.archived_at = None
    obj.save(update_fields=["archived_at", "updated_at"])
    audit(actor=actor, action="unarchive", obj=obj, changes={"archived": [True, False]})
    return obj


def delete(*, obj: Archivable, actor: Any = None) -> None:
    """Delete ``obj``; raise :class:`InUse` while any place, history included, uses it."""
    try:
        with transaction.atomic():
            locked = _locked(obj)
            usage = usage_of(locked)
            if not usage.can_delete:
                raise InUse("delete", usage)
            audit(actor=actor, action="delete", obj=locked, changes={"slug": [locked.slug, None]})
            locked.delete()
    except (ProtectedError, IntegrityError):
        # Written between the check and the delete: report it as what it is.
        usage = usage_of(obj)
        if usage.can_delete:
            usage = Usage((Place("ledger", "records written just now", "", live=False),))
        raise InUse("delete", usage) from None
