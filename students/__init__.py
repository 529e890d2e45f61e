"""Student builders: small models initialised from a teacher's weights."""

from polydistill.students.layers import pick_layers, student_from_teacher
from polydistill.students.prune import PruneConfig, PruneSummary, prune, prune_with_summary
from polydistill.students.transfer import TransferConfig, TransferReport, transfer_to_xlmr
from polydistill.students.width import WidthPlan, plan_width, shrink_width, shrink_width_with_plan, student_from_config

__all__ = [
    "PruneConfig",
    "PruneSummary",
    "TransferConfig",
    "TransferReport",
    "WidthPlan",
    "pick_layers",
    "plan_width",
    "prune",
    "prune_with_summary",
    "shrink_width",
    "shrink_width_with_plan",
    "student_from_config",
    "student_from_teacher",
    "transfer_to_xlmr",
]
