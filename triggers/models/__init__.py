"""Rules, their immutable versions, enrollments, the message ledger, templates and the logs."""

from .experiments import Assignment, Experiment, ExperimentStatus, Variant
from .logs import AuditLog, DecisionLog, Heartbeat
from .messages import Message, MessageStatus, MessageTemplate, ReviewItem, ReviewStatus
from .rules import Channel, Enrollment, Rule, RuleState, RuleStatus, RuleVersion
from .simulation import BacktestRun, BacktestStatus
from .workspace import WorkspaceSettings

__all__ = [
    "Assignment",
    "AuditLog",
    "BacktestRun",
    "BacktestStatus",
    "Channel",
    "DecisionLog",
    "Enrollment",
    "Experiment",
    "ExperimentStatus",
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
    "Variant",
    "WorkspaceSettings",
]
