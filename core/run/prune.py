"""Pruning a workdir: old model versions, and artifacts, cache records and cached features nothing uses.

What is kept: for every model name, the champion, the version before it and the `keep` newest versions; the
artifacts of the `keep` most recent runs, of the last successful run and each champion's training data (the
two drift baselines); the feature cache entries of the sentences those runs tokenized. Anything younger than `grace_seconds` is kept too, so a
run in progress (whose artifacts no summary names yet) loses nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from core import registry
from core.storage.records import evict_if_stale, records_dir
from core.storage.feature_cache import FeatureCache, cache_root, sentence_key
from core.run.summary import champion_training_data, latest_success

GRACE_SECONDS = 3600


def kept_runs(workdir: Path, keep: int) -> list[dict[str, Any]]:
    """The summaries of the `keep` most recent runs, newest first."""
    summaries = []
    for path in Path(workdir).glob("runs/*/summary.json"):
        try:
            summaries.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    summaries.sort(key=lambda s: s.get("finished", ""), reverse=True)
    return summaries[:keep]


def prune(workdir: Path, keep: int = 3, dry_run: bool = False, grace_seconds: int = GRACE_SECONDS) -> dict[str, Any]:
    """Remove what nothing kept uses; returns what was (or, with `dry_run`, would be) removed."""
    workdir = Path(workdir)
    report: dict[str, Any] = {"versions": {}, "artifacts": [], "records": 0, "cache_entries": 0, "bytes": 0}
    for name in registry.model_names(workdir):
        report["versions"][name], freed = registry.prune_versions(workdir, name, keep, dry_run)
        report["bytes"] += freed  # the versions' own files, and what killed registrations left

    runs = kept_runs(workdir, keep)
    used = {ref["path"] for run in runs for ref in run.get("artifacts", {}).values()}
    _, reference = latest_success(workdir)
    if reference:
        used.add(reference.path)
    for name in registry.model_names(workdir):  # drift's second baseline: what each champion was trained on
        if champion_data := champion_training_data(workdir, name):
            used.add(champion_data.path)
    cutoff = time.time() - grace_seconds
    for path in sorted((workdir / "artifacts").glob("*/*")):
        relative = path.relative_to(workdir).as_posix()
        if relative in used or path.stat().st_mtime > cutoff:
            continue
        report["artifacts"].append(relative)
        report["bytes"] += _size(path)
        if not dry_run:
            _remove(path)

    if not dry_run:
        for record in records_dir(workdir).glob("*") if records_dir(workdir).is_dir() else []:
            if record.stat().st_mtime < cutoff and evict_if_stale(record, workdir):
                report["records"] += 1

    report["cache_entries"], freed = _compact_feature_cache(workdir, runs, dry_run, cutoff)
    report["bytes"] += freed
    live = {v["version"] for name in registry.model_names(workdir) for v in registry.versions(workdir, name)}
    if dry_run:
        live -= {v for removed in report["versions"].values() for v in removed}
    for scores in sorted(registry.champion_scores_dir(workdir).glob("*.npz")):  # the gate's cache of champion scores
        if scores.name.rsplit("-", 1)[0] not in live:
            report["bytes"] += _size(scores)
            if not dry_run:
                scores.unlink(missing_ok=True)
    return report


def _compact_feature_cache(workdir: Path, runs: list[dict[str, Any]], dry_run: bool,
                           cutoff: float) -> tuple[int, int]:
    """Rewrite each cache part's old segments into one, keeping only the sentences the kept runs tokenized;
    segments younger than `cutoff` (a run may be adding them) are left alone. Returns (removed, bytes)."""
    keys: set[str] = set()
    for run in runs:
        ref = run.get("artifacts", {}).get("tokenize")
        if ref and (workdir / ref["path"]).is_file():
            table = pq.read_table(workdir / ref["path"], columns=["token_ids"])
            keys.update(sentence_key(ids) for ids in table.column("token_ids").to_pylist())
    removed = freed = 0
    for part in sorted(cache_root(workdir).glob("*/*")):
        cache = FeatureCache(workdir, part.parent.name, part.name)
        segments = [s for s in cache.segments() if s.stat().st_mtime < cutoff]
        total = sum(pq.ParquetFile(s).metadata.num_rows for s in segments)
        kept = cache.get(keys, segments) if keys else {}
        if len(kept) == total and len(segments) <= 1:
            continue
        removed += total - len(kept)
        before = sum(s.stat().st_size for s in segments)
        if dry_run:
            continue
        new = cache.put(kept)
        for segment in segments:
            if segment != new:
                segment.unlink(missing_ok=True)
        freed += before - (new.stat().st_size if new else 0)
    return removed, freed


def _size(path: Path) -> int:
    return registry.tree_size(path)


def _remove(path: Path) -> None:
    if path.is_dir():
        trash = path.with_name(f".deleting-{path.name}")
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

