"""The four EDA operations (Wei & Zou, 2019) on one sentence, with the guards that keep its label true.

WordNet is English, so a sentence in another language is never augmented (`skip_reason`, with py3langid or the
data's declared `augment.language`). Words are whitespace-separated tokens, kept as written. A token is
*protected* when changing, moving or deleting it could flip or blur the label: negations (not, no, never, n't,
without, ...) and the auxiliary before a split "n't" (the "ca" of "ca n't"), any configured protected word,
numbers, percentages and anything with a digit, currency signs, and tickers or acronyms (all capitals).
Protected tokens stay where they are; only plain lower-case words are candidates for synonyms, and a synonym
is never an antonym (see `core.text.wordnet`). Randomness comes from a `random.Random` the caller seeds per
sentence and copy.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Iterable

NEGATIONS = frozenset({
    "not", "no", "never", "n't", "without", "none", "nor", "neither", "nobody", "nothing", "nowhere",
    "cannot", "hardly", "barely", "scarcely", "lack", "lacks", "lacked", "lacking", "against", "fail",
    "fails", "failed",
})
_NUMERIC_OR_SYMBOL = re.compile(r"[\d%$€£¥]")
_TICKER = re.compile(r"^\$?[A-Z][A-Z0-9.:\-]{1,}$")

SynonymLookup = Callable[[str], tuple[str, ...]]


@functools.cache
def stop_words() -> frozenset[str]:
    """scikit-learn's English stop words, less the negations (whose replacement would flip a sentence's meaning).
    Imported on first use: scikit-learn takes about a second to import, which a run whose augment step is cached
    (every unchanged re-run) should not pay."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) - NEGATIONS
OPERATIONS = ("sr", "ri", "rs", "rd")
WORDNET_LANGUAGE = "en"  # WordNet's synonyms are English: EDA may touch English sentences only


def language_of(text: str) -> str:
    """The ISO 639 code of the language of `text`, as py3langid identifies it (offline, its bundled model)."""
    import py3langid

    return py3langid.classify(text)[0]


def skip_reason(text: str, language: str = "auto") -> str | None:
    """Why EDA must leave `text` untouched (the language it is in), or None if it may augment it.

    `language` is `augment.language`: `auto` identifies each sentence's language; a code names the language
    of all the data (`en` augments everything, any other leaves everything untouched)."""
    found = language_of(text) if language == "auto" else language
    return None if found == WORDNET_LANGUAGE else found


def protected_positions(words: list[str], protected_words: Iterable[str] = ()) -> set[int]:
    """Indices of the tokens that no operation may replace, move or delete."""
    extra = {w.lower() for w in protected_words}
    keep = set()
    for i, word in enumerate(words):
        low = word.lower()
        if (low in NEGATIONS or low.endswith("n't") or low in extra or _NUMERIC_OR_SYMBOL.search(word)
                or _TICKER.match(word)):
            keep.add(i)
        if low == "n't" and i > 0:
            keep.add(i - 1)  # "ca n't", "does n't": the auxiliary belongs to the negation
    return keep


def is_candidate(word: str) -> bool:
    """A plain lower-case word, long enough and not a stop word: one whose synonyms can be used."""
    return word.isalpha() and word.islower() and len(word) > 2 and word not in stop_words()


def synonym_replacement(words: list[str], n: int, rng: random.Random, synonyms: SynonymLookup,
                        keep: set[int]) -> list[str]:
    """Replace up to `n` distinct candidate words (every occurrence of each) by a random synonym."""
    out = list(words)
    choices = sorted({w for i, w in enumerate(words) if i not in keep and is_candidate(w) and synonyms(w)})
    rng.shuffle(choices)
    for word in choices[:n]:
        replacement = rng.choice(synonyms(word))
        out = [replacement if (w == word and i not in keep) else w for i, w in enumerate(out)]
    return out


def random_insertion(words: list[str], n: int, rng: random.Random, synonyms: SynonymLookup,
                     keep: set[int]) -> list[str]:
    """Insert `n` synonyms of random candidate words at random places, never between "ca" and "n't"."""
    out = list(words)
    pool = sorted({w for i, w in enumerate(words) if i not in keep and is_candidate(w) and synonyms(w)})
    for _ in range(n if pool else 0):
        synonym = rng.choice(synonyms(rng.choice(pool)))
        at = rng.randint(0, len(out))
        while 0 < at < len(out) and out[at].lower() == "n't":
            at += 1
        out.insert(at, synonym)
    return out


def random_swap(words: list[str], n: int, rng: random.Random, keep: set[int]) -> list[str]:
    """Swap the places of two unprotected tokens, `n` times."""
    out = list(words)
    movable = [i for i in range(len(words)) if i not in keep]
    if len(movable) < 2:
        return out
    for _ in range(n):
        a, b = rng.sample(movable, 2)
        out[a], out[b] = out[b], out[a]
    return out


def random_deletion(words: list[str], p: float, rng: random.Random, keep: set[int]) -> list[str]:
    """Delete each unprotected token with probability `p`; at least one unprotected token survives."""
    deletable = [i for i in range(len(words)) if i not in keep]
    if len(deletable) < 2:
        return list(words)
    dropped = {i for i in deletable if rng.random() < p}
    if len(dropped) == len(deletable):
        dropped.discard(rng.choice(deletable))
    return [w for i, w in enumerate(words) if i not in dropped]


def apply(operation: str, words: list[str], strength: float, rng: random.Random, synonyms: SynonymLookup,
          protected_words: Iterable[str] = ()) -> list[str]:
    """Apply one operation (`sr`, `ri`, `rs` or `rd`) at `strength` (alpha, or p for deletion)."""
    keep = protected_positions(words, protected_words)
    n = max(1, int(strength * len(words)))
    if operation == "sr":
        return synonym_replacement(words, n, rng, synonyms, keep)
    if operation == "ri":
        return random_insertion(words, n, rng, synonyms, keep)
    if operation == "rs":
        return random_swap(words, n, rng, keep)
    if operation == "rd":
        return random_deletion(words, strength, rng, keep)
    raise ValueError(f"unknown EDA operation {operation!r}; expected one of {OPERATIONS}")
