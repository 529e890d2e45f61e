"""Tokenisation in the benchmark: one tokenizer per distinct tokenizer.json, the real token lengths of
`--texts` (the length mix), and the `stage: "tokenize"` rows, timed in their own rounds."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polydistill.benchmarks.latency import interleaved_until_settled
from polydistill.benchmarks.rows import RowLabel, make_row
from polydistill.benchmarks.settings import Cell, Settings
from polydistill.benchmarks.variants import Source
from polydistill.models import load_tokenizer


def unique_tokenizers(sources: list[Source]) -> list[Source]:
    """One source per distinct tokenizer: same tokenizer.json content, ignoring the truncation and
    padding state a tokenizer saves after it was last called with them."""
    seen: set[str] = set()
    out = []
    for src in sources:
        if src.tokenizer_dir is None:
            continue
        file = src.tokenizer_dir / "tokenizer.json"
        key = str(src.tokenizer_dir)
        if file.is_file():
            content = json.loads(file.read_text(encoding="utf-8"))
            content.pop("truncation", None)
            content.pop("padding", None)
            key = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        if key not in seen:
            seen.add(key)
            out.append(src)
    return out


def token_lengths(tokenizer_dir: Path, texts: list[str], limit: int = 512) -> list[int]:
    tok = load_tokenizer(tokenizer_dir, "bench")
    return [min(limit, len(ids)) for ids in tok(texts, truncation=False)["input_ids"]]


def measure_tokenization(
    sources: list[Source], texts: list[str], *, batch: int, seq: int, settings: Settings, budget_s: float
) -> list[dict[str, Any]]:
    """Rows timing tokenizer(batch of texts, padding, truncation to `seq`), rotating through `texts`."""
    calls: dict[str, Callable[[], object]] = {}
    by_name: dict[str, tuple[Source, str]] = {}
    for src in unique_tokenizers(sources):
        tok = load_tokenizer(src.tokenizer_dir, "bench")
        chunks = [texts[i : i + batch] for i in range(0, max(1, len(texts) - batch + 1), batch)] or [texts]
        state = {"i": 0}

        def call(tok=tok, chunks=chunks, state=state) -> object:
            state["i"] = (state["i"] + 1) % len(chunks)
            return tok(chunks[state["i"]], padding=True, truncation=True, max_length=seq)

        for _ in range(settings.warmup):
            call()
        calls[src.label] = call
        by_name[src.label] = (src, type(tok).__name__)
    if not calls:
        return []
    results = interleaved_until_settled(calls, max_seconds=budget_s, **settings.stopping_rule())
    rows = []
    for name, stats in results.items():
        src, tok_class = by_name[name]
        note = (
            f"{tok_class}, padding=True, truncation to {seq}; TOKENIZERS_PARALLELISM="
            f"{os.environ.get('TOKENIZERS_PARALLELISM', 'unset')}"
        )
        label = RowLabel("tokenize", src.label, src.role, "tokenizers", None, "cpu")
        rows.append(make_row(label, Cell(batch, seq, None), stats, extra={"notes": [note]}))
    return rows
