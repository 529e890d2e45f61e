"""Student builders: small models initialised from a teacher's weights."""

from students.layers import pick_layers, student_from_teacher

__all__ = ["pick_layers", "student_from_teacher"]
