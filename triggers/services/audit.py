from __future__ import annotations

from typing import Any

from triggers.models import AuditLog


def audit(*, actor: Any, action: str, obj: Any, changes: dict[str, Any] | None = None) -> AuditLog:
    """Record who did what to which object (``actor`` is a user, or None for the system)."""
    user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditLog.objects.create(
        actor=user,
        actor_label=user.get_username() if user else (str(actor) if actor else "system"),
        action=action,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        changes=changes or {},
    )
