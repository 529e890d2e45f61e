"""Students that keep a subset of the teacher's layers, initialised from its weights.

DistilBERT (Sanh et al. 2019) showed that initialising from every other teacher layer is what makes
a shallow student trainable on little data; here any subset can be kept.
"""

from __future__ import annotations

import copy
import re

from transformers import PreTrainedModel

_LAYER_KEY = re.compile(r"(\.layer\.)(\d+)(\.)")


def pick_layers(num_teacher_layers: int, num_layers: int) -> list[int]:
    """`num_layers` teacher layers spread evenly, always ending with the last one.

    12 → 6 gives [1, 3, 5, 7, 9, 11]; 4 → 2 gives [1, 3].
    """
    if not 1 <= num_layers <= num_teacher_layers:
        raise ValueError(f"cannot keep {num_layers} of {num_teacher_layers} layers")
    return [round((i + 1) * num_teacher_layers / num_layers) - 1 for i in range(num_layers)]


def student_from_teacher(teacher: PreTrainedModel, layers: list[int]) -> PreTrainedModel:
    """A copy of `teacher` with only the encoder layers `layers` (in that order).

    Embeddings, classifier head and each kept layer are copied; nothing is randomly initialised.
    """
    n = teacher.config.num_hidden_layers
    if not layers or any(not 0 <= i < n for i in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"layers {layers} must be distinct indices in [0, {n})")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = type(teacher)(config)
    new_index = {old: new for new, old in enumerate(layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        match = _LAYER_KEY.search(key)
        if match is None:
            state[key] = value.clone()
        elif int(match.group(2)) in new_index:
            new_key = _LAYER_KEY.sub(lambda m: f"{m.group(1)}{new_index[int(m.group(2))]}{m.group(3)}", key, count=1)
            state[new_key] = value.clone()
    student.load_state_dict(state, strict=True)
    return student
