"""A multilingual XLM-R-architecture student from an English BERT teacher, by vocabulary transfer.

The student keeps some of the teacher's transformer layers unchanged (a BERT layer and an XLM-R layer are
the same module) but gets a new tokenizer, e.g. a Unigram vocabulary trained on every target language.
Each new piece starts from the mean of the teacher's embeddings of the WordPieces that piece's text splits
into, in the spirit of WECHSEL (Minixhofer et al., 2022) and FOCUS (Dobler & de Melo, 2023) without their
aligned word vectors: pieces the teacher's vocabulary shares (names, numbers, loanwords, English) start
where the teacher has them, the others (another script) start as random draws around the teacher's mean.

    student = transfer_to_xlmr(teacher, teacher_tokenizer, tokenizer, TransferConfig(layers=[1, 3, 5]))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, XLMRobertaConfig, XLMRobertaModel

from polydistill.models import ATTN_IMPLEMENTATION

XLMR_PAD_ID = 1  # XLM-R derives position ids from the pad id: positions start at pad id + 1
METASPACE = "▁"  # SentencePiece's word-start marker


@dataclass(frozen=True)
class TransferConfig:
    layers: list[int] | None = None  # teacher layers the student keeps, in order; null: all of them
    seed: int = 0  # for the embeddings of pieces the teacher cannot spell


@dataclass(frozen=True)
class TransferReport:
    pieces: int
    from_teacher: int  # pieces initialised from the teacher's WordPiece embeddings
    random: int  # pieces the teacher's vocabulary spells only as [UNK]


def transfer_to_xlmr(
    teacher: PreTrainedModel, teacher_tokenizer: PreTrainedTokenizerBase, tokenizer: PreTrainedTokenizerBase,
    cfg: TransferConfig,
) -> tuple[XLMRobertaModel, TransferReport]:  # fmt: skip
    """An `XLMRobertaModel` with `tokenizer`'s vocabulary (XLM-R special ids) and the teacher's chosen layers."""
    bert = teacher.base_model
    tc = bert.config
    layers = list(range(tc.num_hidden_layers)) if cfg.layers is None else list(cfg.layers)
    if not layers or any(not 0 <= i < tc.num_hidden_layers for i in layers):
        raise ValueError(f"layers must be indices of the teacher's {tc.num_hidden_layers} layers, got {layers}")
    if tokenizer.pad_token_id != XLMR_PAD_ID:
        raise ValueError(f"the student tokenizer's pad id must be {XLMR_PAD_ID} (XLM-R), got {tokenizer.pad_token_id}")
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=tc.hidden_size,
        num_hidden_layers=len(layers),
        num_attention_heads=tc.num_attention_heads,
        intermediate_size=tc.intermediate_size,
        hidden_act=tc.hidden_act,
        layer_norm_eps=tc.layer_norm_eps,
        max_position_embeddings=tc.max_position_embeddings + XLMR_PAD_ID + 1,
        type_vocab_size=1,
        pad_token_id=XLMR_PAD_ID,
        bos_token_id=0,
        eos_token_id=2,
    )
    config._attn_implementation = ATTN_IMPLEMENTATION
    student = XLMRobertaModel(config, add_pooling_layer=False)
    with torch.no_grad():
        emb, temb = student.embeddings, bert.embeddings
        words, report = _transferred_embeddings(temb.word_embeddings.weight, teacher_tokenizer, tokenizer, cfg.seed)
        emb.word_embeddings.weight.copy_(words)
        positions = temb.position_embeddings.weight
        emb.position_embeddings.weight.zero_()  # rows 0..pad id are never looked up
        emb.position_embeddings.weight[XLMR_PAD_ID + 1 :].copy_(positions)
        emb.token_type_embeddings.weight.copy_(temb.token_type_embeddings.weight[:1])
        emb.LayerNorm.load_state_dict(temb.LayerNorm.state_dict())
        for mine, theirs in zip(student.encoder.layer, layers, strict=True):
            mine.load_state_dict(bert.encoder.layer[theirs].state_dict())
    return student.eval(), report  # eval, as from_pretrained returns models: no dropout until trained


# the teacher token each XLM-R special token starts from
_SPECIALS = {"bos_token": "cls_token", "eos_token": "sep_token", "pad_token": "pad_token", "unk_token": "unk_token",
             "mask_token": "mask_token"}  # fmt: skip


def _transferred_embeddings(
    table: torch.Tensor, teacher_tokenizer: PreTrainedTokenizerBase, tokenizer: PreTrainedTokenizerBase, seed: int
) -> tuple[torch.Tensor, TransferReport]:
    generator = torch.Generator().manual_seed(seed)
    mean, std = table.mean(0), table.std(0)
    out = mean + std * torch.randn((len(tokenizer), table.shape[1]), generator=generator)
    unk = teacher_tokenizer.unk_token_id
    specials = {}
    for mine, theirs in _SPECIALS.items():
        mine_id = getattr(tokenizer, f"{mine}_id")
        theirs_id = getattr(teacher_tokenizer, f"{theirs}_id")
        if mine_id is not None and theirs_id is not None:
            specials[mine_id] = theirs_id
    vocab = teacher_tokenizer.get_vocab()
    from_teacher = 0
    for piece, i in tokenizer.get_vocab().items():
        if i in specials:
            out[i] = table[specials[i]]
            continue
        ids = _spell(piece, teacher_tokenizer, vocab)
        ids = [t for t in ids if t != unk]
        if ids:
            out[i] = table[ids].mean(0)
            from_teacher += 1
    pieces = len(tokenizer) - len(specials)
    return out, TransferReport(pieces=pieces, from_teacher=from_teacher, random=pieces - from_teacher)


def _spell(piece: str, teacher_tokenizer: PreTrainedTokenizerBase, vocab: dict[str, int]) -> list[int]:
    """The teacher's ids for a Unigram piece: a word start ("▁word") as a word, a continuation ("ing") as
    its "##ing" WordPiece when the teacher has one."""
    text = piece.replace(METASPACE, " ").strip()
    if not text:
        return []
    if not piece.startswith(METASPACE):
        for form in (f"##{text}", f"##{text.lower()}"):
            if form in vocab:
                return [vocab[form]]
    return teacher_tokenizer(text, add_special_tokens=False)["input_ids"]
