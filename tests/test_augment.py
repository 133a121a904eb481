"""augment: EDA on real PhraseBank sentences with real WordNet; labels and evaluation never corrupted."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.text import eda
from tasks.augment import Plan, augment, copies_of, plan
from schemas.config import AugmentConfig, DataConfig, SplitConfig
from core.text.identity import normalize_text
from tasks.split import split
from tasks.validate import validate
from core.text.wordnet import Synonyms, load_wordnet
from tests.conftest import first_per_label, phrasebank_rows, write_csv

CFG = AugmentConfig()


@pytest.fixture(scope="module")
def synonyms():
    return Synonyms(CFG.wordnet_dir).lookup


def _is_subsequence(needle: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(any(word == candidate for candidate in it) for word in needle)


def test_protected_tokens_survive_every_operation(synonyms):
    sentences = [r["text"] for r in phrasebank_rows()
                 if any(w in r["text"].split() for w in ("not", "n't", "without", "no")) or "%" in r["text"]][:120]
    assert len(sentences) == 120
    checked = 0
    for text in sentences:
        words = text.split()
        keep = eda.protected_positions(words)
        protected = [words[i] for i in sorted(keep)]
        for op in eda.OPERATIONS:
            for trial in range(3):
                out = eda.apply(op, words, 0.3, random.Random(f"{text}{op}{trial}"), synonyms)
                assert _is_subsequence(protected, out), (op, text, out)
                checked += 1
    assert checked == 120 * 4 * 3


def test_numbers_percentages_tickers_negations_are_protected():
    words = "Operating profit was not EUR 5.7 mn , down 12 % ; HEL:NOK1V shares ca n't rise".split()
    keep = {words[i] for i in eda.protected_positions(words, protected_words=["profit"])}
    assert {"not", "EUR", "5.7", "12", "%", "HEL:NOK1V", "ca", "n't", "profit"} <= keep
    assert not {"Operating", "shares", "rise", "down"} & keep


def test_synonyms_are_never_antonyms(synonyms):
    wordnet = load_wordnet(CFG.wordnet_dir)
    for word in ("increase", "rise", "gain", "good", "strong", "profit", "higher", "up", "better", "win"):
        antonyms = {a.name().replace("_", " ").lower() for s in wordnet.synsets(word) for l in s.lemmas()
                    for a in l.antonyms()}
        assert not antonyms & set(synonyms(word)), word
    assert "decrease" not in synonyms("increase")


def test_random_deletion_never_deletes_everything():
    rng = random.Random(0)
    for _ in range(200):
        assert eda.random_deletion(["profit", "grew"], 0.5, rng, set())


def test_only_training_rows_are_augmented_and_tagged(tmp_path: Path):
    path = write_csv(tmp_path / "d.csv", first_per_label(40))
    splits = split(validate(DataConfig(path=path), tmp_path), SplitConfig(), 0, 5, tmp_path)
    ref = augment(splits, AugmentConfig(n_aug=3), seed=7, workdir=tmp_path)
    table = pq.read_table(ref.resolve(tmp_path)).to_pandas()
    originals = table[~table["is_augmented"]]
    added = table[table["is_augmented"]]
    assert len(originals) == splits.rows and len(added) > 0
    assert set(added["split"]) == {"train"}
    train_ids = set(originals.loc[originals["split"] == "train", "row_id"])
    assert set(added["source_id"]) <= train_ids
    assert set(added["ops"]) <= set(eda.OPERATIONS) and added["copy"].between(1, 3).all()
    held_out = set(originals.loc[originals["split"] != "train", "text"].map(normalize_text))
    assert not held_out & set(added["text"].map(normalize_text))
    labels = dict(zip(originals["row_id"], originals["label"]))
    assert (added["label"] == added["source_id"].map(labels)).all()
    assert ref.meta["rows_in"] == splits.rows and ref.meta["rows_out"] == len(table)


def test_copies_depend_only_on_seed_source_and_copy(synonyms):
    chosen = Plan(4, {"sr": 0.1, "ri": 0.1, "rs": 0.1, "rd": 0.1})
    texts = [r["text"] for r in first_per_label(10)]
    forward = {t: copies_of(t, f"id{t}", chosen, 3, synonyms, set()) for t in texts}
    backward = {t: copies_of(t, f"id{t}", chosen, 3, synonyms, set()) for t in reversed(texts)}
    assert forward == backward
    other_seed = {t: copies_of(t, f"id{t}", chosen, 4, synonyms, set()) for t in texts}
    assert forward != other_seed


def test_same_input_gives_byte_identical_output(tmp_path: Path):
    path = write_csv(tmp_path / "d.csv", first_per_label(20))
    splits = split(validate(DataConfig(path=path), tmp_path), SplitConfig(), 0, 5, tmp_path)
    first = augment(splits, AugmentConfig(n_aug=2), 1, tmp_path)
    second = augment(splits, AugmentConfig(n_aug=2), 1, tmp_path)
    assert first.sha256 == second.sha256


@pytest.mark.parametrize("n_train, copies, alpha", [(300, 16, 0.05), (2000, 8, 0.05), (6000, 4, 0.1)])
def test_paper_follows_wei_and_zou_by_training_size(n_train, copies, alpha):
    chosen = plan(AugmentConfig(n_aug="paper"), n_train)
    assert chosen.n_aug == copies and chosen.strengths["sr"] == alpha


@pytest.mark.parametrize("n_train", [250, 500, 3000])
def test_auto_is_the_measured_default_and_an_integer_overrides_it(n_train):
    """The ablation (benchmarks/RESULTS.md) found no gain from copies with this backbone: auto adds none."""
    assert AugmentConfig().n_aug == "auto" and plan(AugmentConfig(), n_train).n_aug == 0
    assert plan(AugmentConfig(n_aug="3"), n_train).n_aug == 3
    with pytest.raises(ValueError):
        AugmentConfig(n_aug="lots")


def test_output_is_identical_in_another_process(tmp_path: Path):
    """Same input, parameters and seed in a fresh interpreter (another hash seed) give the same bytes."""
    import subprocess
    import sys

    path = write_csv(tmp_path / "d.csv", first_per_label(20))
    splits = split(validate(DataConfig(path=path), tmp_path), SplitConfig(), 0, 5, tmp_path)
    here = augment(splits, AugmentConfig(n_aug=3), 5, tmp_path)
    code = ("import sys; from pathlib import Path; from tasks.augment import augment; from schemas.config import "
            "AugmentConfig; from core.storage.artifacts import ArtifactRef; "
            f"ref = ArtifactRef.model_validate_json({splits.model_dump_json()!r}); "
            f"print(augment(ref, AugmentConfig(n_aug=3), 5, Path({str(tmp_path / 'other')!r})).sha256)")
    (tmp_path / "other" / "artifacts").mkdir(parents=True)
    import shutil

    shutil.copytree(tmp_path / "artifacts" / "split", tmp_path / "other" / "artifacts" / "split")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1],
                            env={**__import__("os").environ, "PYTHONHASHSEED": "12345"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == here.sha256
