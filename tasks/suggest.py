"""Active learning: which unlabelled sentences of a pool an analyst should label next, best first.

Two methods, both uncertainty with diversity on the cached sentence embeddings:
- `margin-kmeans` (the default): margin-weighted k-means, Zhdanov, "Diverse mini-batch Active Learning"
  (arXiv:1901.05954, 2019), the idea Citovsky et al. scale up as "cluster-margin" ("Batch Active Learning at
  Scale", NeurIPS 2021): the beta * N pool rows of smallest margin (top probability minus the second) are
  clustered into N by k-means weighted by uncertainty, and the row nearest each centre is taken; most uncertain
  first. Uncertainty picks what the model cannot decide; the clusters keep the batch from being N versions of
  one hard sentence. In Zhdanov's experiments it beats margin sampling alone.
- `badge`: BADGE (Ash, Zhang, Krishnamurthy, Langford and Agarwal, "Deep Batch Active Learning by Diverse,
  Uncertain Gradient Lower Bounds", ICLR 2020, arXiv:1906.03671): each sentence's gradient of the loss at the last
  layer, taking the model's prediction as the label, g = (p - onehot(argmax p)) (x) h (h: the frozen backbone's
  L2-normalised pooled embedding), and the k-means++ seeding of those gradients, in the order picked.
Measured against random choice and margin alone by `make bench B=active_learning` (RESULTS.md, issue 28's note):
on our two datasets margin-kmeans needs 39 % and 50 % fewer labels than random to reach random's final macro-F1
and is level with margin alone; BADGE was no better than random on the PhraseBank, so it is not the default.

What is never suggested: a sentence of the model's own labelled data (every validated row of the run that trained
it, found through its lineage's `validated_sha256`), by normalised-text identity (`core.text.identity`) or as a
near-duplicate (cosine of the pooled embeddings >= `max_similarity`, default 0.95); nor two near-duplicates of
each other (the pool is de-duplicated by identity first, and a pick excludes every pool sentence that close to it).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from core.model.backbone import Backbone
from core.errors import Failure, InvalidData
from core import registry
from core.storage.artifacts import artifact_dir, atomic_path
from core.storage.caching import step_task
from core.text.identity import row_id
from core.registry.scoring import cached_token_ids, score_with_cache, trained_backbone
from core.text.inputs import read_texts
from core.registry.version import Version

log = logging.getLogger(__name__)

MAX_SIMILARITY = 0.95  # cosine of two pooled MiniLM embeddings: above it, sentences differ by a word or a number
ADDED = ("rank", "predicted_label", "score", "margin", "reason")  # + one prob_<label> per label
FORMATS = (".csv", ".parquet")
METHODS = ("margin-kmeans", "badge")


def labelled_texts(folder: Path, workdir: Path) -> list[str]:
    """Every sentence of the labelled data the version in `folder` was trained from (all its validated rows:
    training, validation and test: each already has a label). Raises `RegistryError` naming the fix when that
    record is gone (pruned, or another workdir)."""
    try:
        digest = Version(folder).read_lineage()["validated_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise registry.RegistryError(f"{Version(folder).lineage} does not name the model's data ({exc}); "
                                     "suggest needs it to leave out what is already labelled: retrain") from exc
    path = artifact_dir(workdir, "validate") / f"{digest[:16]}.parquet"
    if not path.is_file():
        raise registry.RegistryError(f"the labelled data of {folder.name} ({path}) is no longer in the workdir, so "
                                     "its sentences cannot be left out of the suggestions: run flows.retrain on "
                                     "that data again in this workdir (every step is cached), or pick --model "
                                     "with its data present")
    return pq.read_table(path, columns=["text"]).column("text").to_pylist()


def gradient_embeddings(proba: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """BADGE's gradient embeddings (n, k * d) float32: (p - onehot(argmax p)) outer h, for probabilities (n, k)
    and representations (n, d) (Ash et al. 2020, section 3)."""
    residual = proba.copy()
    residual[np.arange(len(proba)), proba.argmax(axis=1)] -= 1.0
    return (residual[:, :, None] * embeddings[:, None, :]).reshape(len(proba), -1).astype(np.float32)


def badge_order(gradients: np.ndarray, embeddings: np.ndarray, n: int, seed: int = 0,
                max_similarity: float = MAX_SIMILARITY, blocked: np.ndarray | None = None) -> list[int]:
    """Up to `n` row indices chosen by k-means++ seeding of `gradients` (n_rows, g), in the order picked.

    The first is the row with the largest gradient (as BADGE's reference code); each next one is drawn with
    probability proportional to its squared distance from the nearest row picked so far. A pick removes every
    row whose embedding (`embeddings`, L2-normalised) has cosine >= `max_similarity` with it; rows in
    `blocked` (bool mask) are never picked. When every remaining distance is 0 (all candidates equal a pick in
    gradient space), the largest remaining gradient comes next. Deterministic for a given `seed`."""
    rng = np.random.default_rng(seed)
    alive = np.ones(len(gradients), dtype=bool) if blocked is None else ~blocked
    sq_norms = np.einsum("ij,ij->i", gradients, gradients).astype(np.float64)
    nearest = np.full(len(gradients), np.inf)
    picked: list[int] = []
    while len(picked) < n and alive.any():
        if not picked:
            choice = int(np.flatnonzero(alive)[np.argmax(sq_norms[alive])])
        else:
            weights = np.where(alive, nearest, 0.0)
            if weights.sum() <= 0:
                choice = int(np.flatnonzero(alive)[np.argmax(sq_norms[alive])])
            else:
                choice = int(rng.choice(len(weights), p=weights / weights.sum()))
        picked.append(choice)
        alive[choice] = False
        alive &= embeddings @ embeddings[choice] < max_similarity
        gap = gradients - gradients[choice]
        nearest = np.minimum(nearest, np.einsum("ij,ij->i", gap, gap))
    return picked


def margin_kmeans_order(proba: np.ndarray, embeddings: np.ndarray, n: int, seed: int = 0,
                        max_similarity: float = MAX_SIMILARITY, blocked: np.ndarray | None = None,
                        beta: int = 10) -> list[int]:
    """Up to `n` row indices by margin-weighted k-means (Zhdanov, "Diverse mini-batch Active Learning",
    arXiv:1901.05954, 2019): keep the `beta * n` rows of smallest margin (top probability minus the second),
    cluster their `embeddings` into `n` clusters by k-means weighted by 1 - margin (scikit-learn's KMeans), take
    from each cluster the row nearest its centre; most uncertain first. A row with cosine >= `max_similarity`
    to one taken before is skipped (the next most uncertain candidate takes its place); `blocked` rows never
    come. Deterministic for a given `seed`."""
    from sklearn.cluster import KMeans

    ranked = np.sort(proba, axis=1)
    margin = ranked[:, -1] - (ranked[:, -2] if proba.shape[1] > 1 else 0.0)
    allowed = np.flatnonzero(np.ones(len(proba), dtype=bool) if blocked is None else ~blocked)
    if not len(allowed) or n < 1:
        return []
    candidates = allowed[np.argsort(margin[allowed], kind="stable")[: beta * n]]
    k = min(n, len(candidates))
    kmeans = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(embeddings[candidates],
                                                                    sample_weight=1.0 - margin[candidates] + 1e-6)
    distance = kmeans.transform(embeddings[candidates])[np.arange(len(candidates)), kmeans.labels_]
    centre_rows = [candidates[np.flatnonzero(kmeans.labels_ == c)[np.argmin(distance[kmeans.labels_ == c])]]
                   for c in range(k) if (kmeans.labels_ == c).any()]
    order = sorted(centre_rows, key=lambda i: margin[i]) + [int(i) for i in candidates if i not in set(centre_rows)]
    picked: list[int] = []
    for i in order:
        if len(picked) == n:
            break
        if not picked or (embeddings[picked] @ embeddings[i]).max() < max_similarity:
            picked.append(int(i))
    return sorted(picked, key=lambda i: margin[i])


def near_known(embeddings: np.ndarray, known: np.ndarray, max_similarity: float, chunk: int = 2048) -> np.ndarray:
    """Bool (n,): which rows of `embeddings` have cosine >= `max_similarity` with some row of `known` (both
    L2-normalised), in chunks so memory stays at chunk x len(known) floats."""
    out = np.zeros(len(embeddings), dtype=bool)
    if not len(known):
        return out
    for start in range(0, len(embeddings), chunk):
        out[start: start + chunk] = (embeddings[start: start + chunk] @ known.T).max(axis=1) >= max_similarity
    return out


def suggest_file(pool: Path, out: Path, n: int, folder: Path, workdir: Path, text_col: str,
                 encoding: str = "utf-8", max_chars: int = 2000, max_file_mb: int = 512, delimiter: str = "auto",
                 max_similarity: float = MAX_SIMILARITY, seed: int = 0, method: str = "margin-kmeans") -> dict:
    """Write to `out` (CSV or Parquet by extension, atomically) the `n` rows of `pool` most worth labelling for
    the model in `folder`, best first: the pool's columns, `rank` (1 = first), `predicted_label`, one
    `prob_<label>` per label, `score` (margin-kmeans: the uncertainty 1 - margin, in [0, 1], non-increasing down
    the list; badge: the gradient norm ||p - onehot||, 0 certain, up to sqrt(2), in the order picked), `margin`
    (top probability minus the second) and `reason` (in words). `method` is one of METHODS. Returns the accounting of every pool row
    (rows, invalid, already labelled, near-duplicates, duplicates in the pool, candidates, suggested) and timing.

    Invalid pool rows (empty text, say) are counted and skipped, never suggested. Raises `InvalidData` if the
    pool has a column named like one of the added ones (it is never overwritten), `ValueError` for another
    output extension, and `RegistryError` if the model's labelled data is no longer in the workdir."""
    started = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"--out must end in {' or '.join(FORMATS)}, got {out.name}")
    inputs = read_texts(pool, text_col, encoding, max_chars, max_file_mb, delimiter, on_invalid="keep")
    labels = list(Version(folder).read_card()["labels"])
    added = [*ADDED[:2], *[f"prob_{label}" for label in labels], *ADDED[2:]]
    if clash := [c for c in added if c in inputs.frame.columns]:
        raise InvalidData([Failure(str(pool), "file", c, f"the pool already has a column {c!r}, which suggest adds; "
                                   "rename it (no column of the input is ever overwritten)") for c in clash])
    valid = inputs.valid
    texts = inputs.frame[text_col].astype(str).tolist()
    first_of: dict[str, int] = {}
    for i in valid:
        first_of.setdefault(row_id(texts[i]), i)
    labelled = labelled_texts(folder, workdir)
    known_ids = {row_id(t) for t in labelled}
    distinct = sorted(first_of.values())
    fresh = [i for i in distinct if row_id(texts[i]) not in known_ids]
    backbone = trained_backbone(folder)
    scored = score_with_cache(folder, [texts[i] for i in fresh], backbone, workdir)
    known = score_known_embeddings(folder, labelled, backbone, workdir)
    close = near_known(scored.embeddings, known, max_similarity)
    gradients = gradient_embeddings(scored.proba, scored.embeddings)
    if method == "badge":
        order = badge_order(gradients, scored.embeddings, n, seed, max_similarity, blocked=close)
    else:
        order = margin_kmeans_order(scored.proba, scored.embeddings, n, seed, max_similarity, blocked=close)
    rows = [fresh[j] for j in order]
    result = inputs.frame.iloc[rows].reset_index(drop=True).copy()
    proba = scored.proba[order]
    result["rank"] = np.arange(1, len(rows) + 1)
    result["predicted_label"] = [labels[k] for k in proba.argmax(axis=1)]
    for k, label in enumerate(labels):
        result[f"prob_{label}"] = proba[:, k]
    ranked = np.sort(proba, axis=1)[:, ::-1]
    margins = ranked[:, 0] - (ranked[:, 1] if proba.shape[1] > 1 else 0.0)
    result["score"] = (np.sqrt(np.einsum("ij,ij->i", gradients[order], gradients[order])) if method == "badge"
                       else 1.0 - margins)
    result["margin"] = margins
    result["reason"] = reasons(proba, labels, scored.embeddings[order])
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".csv":
            result.to_csv(tmp, index=False)
        else:
            from core.text.inputs import rows_to_arrow

            pq.write_table(rows_to_arrow(result), tmp, compression="zstd")
    figures = {"rows": len(inputs.frame), "invalid": len(inputs.frame) - len(valid),
               "duplicates_in_pool": len(valid) - len(distinct), "already_labelled": len(distinct) - len(fresh),
               "near_labelled": int(close.sum()), "candidates": int(len(fresh) - close.sum()),
               "suggested": len(rows), "requested": n, "backbone_computed": scored.counts["computed"],
               "model": folder.name, "method": method, "max_similarity": max_similarity,
               "seconds": round(time.perf_counter() - started, 2), "out": str(out)}
    log.info("suggest: %d pool rows: %d invalid, %d repeated in the pool, %d already labelled, %d near-duplicates "
             "of labelled sentences (cosine >= %.2f), %d candidates; %d suggested%s -> %s (%.1f s)", figures["rows"],
             figures["invalid"], figures["duplicates_in_pool"], figures["already_labelled"], figures["near_labelled"],
             max_similarity, figures["candidates"], len(rows),
             f" (fewer than the {n} asked: every other candidate is a near-duplicate of one of these)"
             if len(rows) < n else "",
             out, figures["seconds"])
    return figures


def score_known_embeddings(folder: Path, texts: list[str], backbone: Backbone, workdir: Path) -> np.ndarray:
    """Pooled embeddings (n, d) of the model's labelled sentences, from the feature cache (where training left
    them: no backbone run in the usual case)."""
    from core.model.features import cached_features

    card = Version(folder).read_card()
    sequences = cached_token_ids(backbone, texts, int(card["tokenizer"]["sequence_length"]), workdir)
    embeddings, _, _ = cached_features(backbone, sequences, backbone.architecture.blocks, workdir)
    return embeddings


def reasons(proba: np.ndarray, labels: list[str], embeddings: np.ndarray) -> list[str]:
    """Why each chosen row (in rank order) is there, in words: the two classes it sits between, and how unlike
    the rows ranked above it it is (highest cosine to any of them)."""
    out = []
    for i, p in enumerate(proba):
        top = np.argsort(p)[::-1]
        between = (f"between {labels[top[0]]} ({p[top[0]]:.2f}) and {labels[top[1]]} ({p[top[1]]:.2f})"
                   if len(labels) > 1 else f"{labels[top[0]]} ({p[top[0]]:.2f})")
        if i == 0:
            out.append(f"uncertain, {between}")
        else:
            out.append(f"uncertain, {between}; nearest row above has cosine "
                       f"{float((embeddings[:i] @ embeddings[i]).max()):.2f}")
    return out


suggest_task = step_task(suggest_file, cached=False, retries=0)
