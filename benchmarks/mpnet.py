"""The all-mpnet-base-v2 body: embedding throughput of the pipeline against sentence-transformers, side by side.

The same ~500 bundled sentences (every 10th row of data/financial-phrasebank/phrasebank.csv), text in and
L2-normalised mean-pooled embeddings out, model load excluded, after one warm-up pass on 64 of them:
- the pipeline's embed path: `encode_for_model` (keras-hub WordPiece) then `tasks.embed.run_bottom` (the whole
  frozen backbone, length-grouped batches of 64, one TensorFlow graph for every shape);
- sentence-transformers 6.2 (`SentenceTransformer.encode`, batch 32, torch CPU) in the benchmark-only
  `.venv-peers`, in a subprocess.
The two alternate (peer, ours, peer, ours), each pass timed on its own, so a load spike from other work on the
machine lands on both; the table gives every pass and the ratio of the medians. The agreement of the two
outputs (min cosine) is checked on the same sentences. Needs `make mpnet` and `.venv-peers` (`make bench-peers`).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import table, write_section  # noqa: E402
from tests.conftest import phrasebank_rows  # noqa: E402

PEERS = ROOT / ".venv-peers" / "bin" / "python"
PASSES = 2
PEER_SCRIPT = r"""
import json, sys, time
import numpy as np
from sentence_transformers import SentenceTransformer
folder, texts_file, out_file = sys.argv[1:4]
texts = json.loads(open(texts_file).read())
model = SentenceTransformer(folder, device="cpu")
model.encode(texts[:64], batch_size=32)
started = time.perf_counter()
embeddings = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
seconds = time.perf_counter() - started
np.save(out_file, embeddings.astype(np.float32))
print(json.dumps({"seconds": seconds}))
"""


def sentences() -> list[str]:
    return [row["text"] for row in phrasebank_rows()][::10]


def peer_pass(folder: Path, texts: list[str], tmp: Path) -> tuple[float, np.ndarray]:
    (tmp / "texts.json").write_text(json.dumps(texts))
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([str(PEERS), "-c", PEER_SCRIPT, str(folder), str(tmp / "texts.json"), str(tmp / "st.npy")],
                            capture_output=True, text=True, env=env, check=False)
    if result.returncode:
        sys.exit(f"sentence-transformers failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["seconds"], np.load(tmp / "st.npy")


def our_pass(folder: Path, texts: list[str]) -> tuple[float, np.ndarray]:
    from core.model.backbone import architecture, encode_for_model
    from flows.embed import truncation
    from tasks.embed import run_bottom

    shape = architecture(folder)
    length = truncation(folder, shape.max_positions)
    run_bottom(folder, encode_for_model(folder, texts[:64], length), shape.blocks)  # load and trace
    started = time.perf_counter()
    embeddings, _ = run_bottom(folder, encode_for_model(folder, texts, length), shape.blocks)
    return time.perf_counter() - started, embeddings


def compare(name: str, folder: Path, texts: list[str], tmp: Path) -> list[list[object]]:
    peer, ours, cosine = [], [], 1.0
    for _ in range(PASSES):
        seconds, reference = peer_pass(folder, texts, tmp)
        peer.append(seconds)
        seconds, embeddings = our_pass(folder, texts)
        ours.append(seconds)
        cosine = min(cosine, float(((embeddings * reference).sum(1) / np.linalg.norm(embeddings, axis=1)).min()))
    ratio = statistics.median(peer) / statistics.median(ours)
    n = len(texts)
    return [[name, "sentence-transformers (torch CPU, batch 32)", ", ".join(f"{n / s:.1f}" for s in peer), "1.00", ""],
            [name, "pipeline embed path (Keras/TF, batch 64)", ", ".join(f"{n / s:.1f}" for s in ours),
             f"{ratio:.2f}", f"{cosine:.6f}"]]


def main() -> None:
    import tempfile

    from core.model.backbone import default_preset, preset_folder

    texts = sentences()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("all-mpnet-base-v2", "all-minilm-l6-v2"):
            folder = preset_folder(name) if name != "all-minilm-l6-v2" else default_preset()
            rows += compare(name, folder, texts, Path(tmp))
            print(rows[-2:], file=sys.stderr)
    body = (f"Embedding throughput, {len(texts)} bundled sentences (every 10th row), text in, normalised embeddings "
            f"out, load excluded; {PASSES} alternating passes each (taken under load: six engineers share the 2 cores)."
            "\n\n" + table(["body", "path", "sentences / s (each pass)", "ratio of medians", "min cosine to peer"],
                           rows))
    write_section("mpnet", body)


if __name__ == "__main__":
    main()
