"""Rules, their immutable versions, enrollments, the message ledger, templates and the logs."""

from .logs import AuditLog, DecisionLog, Heartbeat
from .messages import Message, MessageStatus, MessageTemplate, ReviewItem, ReviewStatus
from .rules import Channel, Enrollment, Rule, RuleState, RuleStatus, RuleVersion

__all__ = [
    "AuditLog",
    "Channel",
    "DecisionLog",
    "Enrollment",
    "Heartbeat",
    "Message",
    "MessageStatus",
    "MessageTemplate",
    "ReviewItem",
    "ReviewStatus",
    "Rule",
    "RuleState",
    "RuleStatus",
    "RuleVersion",
]
