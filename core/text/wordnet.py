"""WordNet synonyms for augmentation: loaded once per process, looked up once per word, antonyms excluded."""

from __future__ import annotations

import functools
import threading
import warnings
from pathlib import Path

_lock = threading.Lock()


class WordNetMissing(RuntimeError):
    """NLTK's WordNet data is not installed where the configuration says, nor in NLTK's data path."""


@functools.lru_cache(maxsize=4)
def load_wordnet(root: Path):
    """The NLTK WordNet reader from `root` (a folder holding corpora/wordnet) or NLTK's own data path."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    with _lock:
        if (Path(root) / "corpora" / "wordnet").is_dir() and str(root) not in nltk.data.path:
            nltk.data.path.insert(0, str(root))  # NLTK 3.10 reads corpora only from under its data path
        try:
            location = nltk.data.find("corpora/wordnet")
        except LookupError:
            raise WordNetMissing(
                f"WordNet data not found in {root} nor in NLTK's data path; run `make setup`, or "
                "`python -m nltk.downloader wordnet` where the internet is reachable") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available": not used here
            return WordNetCorpusReader(location, None)


class Synonyms:
    """Synonym look-ups against one WordNet, memoised per word (the hot path of augmentation)."""

    def __init__(self, root: Path):
        self._wordnet = load_wordnet(Path(root))
        self.lookup = functools.lru_cache(maxsize=None)(self._lookup)

    def _lookup(self, word: str) -> tuple[str, ...]:
        """Sorted synonyms of `word` (single or multi-word), never the word itself nor any of its antonyms."""
        synsets = self._wordnet.synsets(word)
        antonyms = {ant.name().replace("_", " ").lower() for syn in synsets for lemma in syn.lemmas() for ant in lemma.antonyms()}
        found = set()
        for syn in synsets:
            for lemma in syn.lemmas():
                candidate = lemma.name().replace("_", " ").lower()
                if candidate != word and candidate not in antonyms and _is_plain(candidate):
                    found.add(candidate)
        return tuple(sorted(found))


def _is_plain(candidate: str) -> bool:
    return all(part.isalpha() for part in candidate.replace("-", " ").split())
