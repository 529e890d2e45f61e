"""Student builders: small models initialised from a teacher's weights."""

from students.layers import pick_layers, student_from_teacher
from students.prune import PruneConfig, PruneSummary, prune, prune_with_summary

__all__ = ["PruneConfig", "PruneSummary", "pick_layers", "prune", "prune_with_summary", "student_from_teacher"]
