"""A recipe's data, whichever the task: SIB-200 sentences (sequence) or UD treebanks (token)."""

from __future__ import annotations

from polydistill.config import (
    DataConfig,
)
from polydistill.data import (
    TaskData,
    load_task_data,
)
from polydistill.ud import load_pos_data


def load_data(cfg: DataConfig) -> TaskData:
    """SIB-200 for a sequence task, UD treebanks for a token task (see `DataConfig`)."""
    if cfg.task == "token":
        return load_pos_data(cfg.path, cfg.languages, cfg.max_train_per_language, cfg.max_eval_per_language)
    return load_task_data(cfg)
