"""Write the reference fixture of the MPNet port, tests/data/mpnet_reference.npz, from the Hugging Face tokenizer
and sentence-transformers (the reference implementation), in the benchmark-only venv:

    make mpnet && HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv-peers/bin/python benchmarks/mpnet_reference.py

The fixture (no torch needed to read it) holds:
- `phrasebank_id_hashes`: for every sentence of data/financial-phrasebank/phrasebank.csv, in file order, the
  first 8 bytes of the SHA-256 of its `<s> ... </s>` ids (int32 little-endian, untruncated), uint8 (n, 8);
- `random_texts`, `random_ids` (flattened int32) and `random_offsets`: 300 seeded random-Unicode strings and their
  ids, in full (a failing test can then show the difference);
- `embedded_texts` (64 bundled sentences spread over the file and 8 of the random strings) and `embeddings`:
  sentence-transformers' pooled, L2-normalised embeddings of them, float32 (72, 768).
Not part of `make bench` (it needs torch): run it when the reference or the weights change.
"""

from __future__ import annotations

import csv
import hashlib
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / ".models" / "all-mpnet-base-v2"
PHRASEBANK = ROOT / "data" / "financial-phrasebank" / "phrasebank.csv"
OUT = ROOT / "tests" / "data" / "mpnet_reference.npz"
sys.path.insert(0, str(ROOT))

from tests.unicode_samples import random_texts  # noqa: E402  (standard library only: runs in .venv-peers)


def id_hash(ids: list[int]) -> bytes:
    """First 8 bytes of the SHA-256 of the ids as int32 little-endian (the test computes the same)."""
    return hashlib.sha256(np.asarray(ids, dtype="<i4").tobytes()).digest()[:8]


def main() -> int:
    from sentence_transformers import SentenceTransformer

    if not (FOLDER / "model.safetensors").is_file():
        print(f"{FOLDER} is missing: run `make mpnet` first", file=sys.stderr)
        return 2
    model = SentenceTransformer(str(FOLDER), device="cpu")
    tokenizer = model.tokenizer
    with open(PHRASEBANK, newline="", encoding="utf-8") as handle:
        sentences = [row["text"] for row in csv.DictReader(handle)]
    encode = lambda texts: tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]  # noqa: E731
    hashes = np.frombuffer(b"".join(id_hash(ids) for ids in encode(sentences)), np.uint8).reshape(-1, 8)
    randoms = random_texts(300, seed=26)
    random_ids = encode(randoms)
    chosen = [sentences[i] for i in np.linspace(0, len(sentences) - 1, 64).astype(int)]
    embedded = chosen + [t for t in randoms if t.strip()][:8]
    embeddings = model.encode(embedded, batch_size=16, convert_to_numpy=True, normalize_embeddings=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, phrasebank_id_hashes=hashes, random_texts=np.array(randoms),
                        random_ids=np.array([i for ids in random_ids for i in ids], np.int32),
                        random_offsets=np.cumsum([0] + [len(ids) for ids in random_ids]).astype(np.int64),
                        embedded_texts=np.array(embedded), embeddings=embeddings.astype(np.float32))
    print(f"{OUT}: {len(hashes)} bundled sentences' id hashes, {len(randoms)} random strings, "
          f"{len(embedded)} embeddings ({OUT.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
