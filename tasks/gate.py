"""Step 7, gate: promote the challenger only if it beats the champion with confidence, on the same rows.

A test split of a few hundred sentences moves accuracy by several points between resamples, so "the higher
number wins" promotes noise. Here both models score the *current* test rows (the champion is re-run on
them), and the decision is a paired bootstrap of the macro-F1 difference: the challenger is promoted only if
the one-sided lower confidence bound of (challenger - champion) is above zero at `gate.confidence`.
McNemar's exact test on the paired right/wrong predictions is reported beside it. With no champion yet, the
challenger must beat the majority-class predictor the same way. If the label set (or the backbone) changed,
the two are not comparable: the decision follows `gate.on_label_change`; if the split settings recorded in the
champion's lineage (salt, fractions) differ from today's, the champion may have trained on today's test rows,
and `gate.on_split_change` decides (by default the challenger is gated against the majority-class predictor).
Every decision also reports what its test rows can detect (`detectable_difference`, see `paired_bootstrap`).
Never cached: the decision depends on the registry as it is now.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.parquet as pq
from pydantic import BaseModel

from core.storage import registry
from core.model.backbone import Backbone, encode_for_model
from core.storage.caching import step_task
from schemas.config import GateConfig, SplitConfig
from core.text.identity import sha256_hex
from core.storage.artifacts import ArtifactRef, atomic_path
from core.estimate import unmeasurable_verdict
from core.metrics import macro_f1_many, paired_bootstrap

log = logging.getLogger(__name__)


class GateDecision(BaseModel):
    """What the gate decided and on what evidence."""

    promote: bool
    decision: Literal["promote", "keep champion"]
    reason: str
    test: str
    champion_version: str | None = None
    confidence: float
    n: int = 0
    challenger_macro_f1: float | None = None
    baseline_macro_f1: float | None = None
    difference: float | None = None
    lower_bound: float | None = None
    interval: list[float] | None = None
    mcnemar_p: float | None = None
    discordant: dict[str, int] | None = None
    champion_scored_on: str | None = None
    difference_histogram: dict[str, list[float]] | None = None  # the resampled differences (edges, counts), for the report
    standard_error: float | None = None  # of the macro-F1 difference, from the paired bootstrap
    promotion_threshold: float | None = None  # the observed gain needed to promote: the one-sided half-width
    detectable_difference: float | None = None  # the true gain promoted with probability `power` (see paired_bootstrap)
    power: float | None = None
    detectable_note: str | None = None
    estimate: dict[str, Any] | None = None  # estimate mode: the cross-validated figures the decision stood on


def mcnemar(y: np.ndarray, challenger: np.ndarray, baseline: np.ndarray) -> tuple[float, dict[str, int]]:
    """McNemar's exact test (two-sided binomial on the discordant pairs)."""
    from scipy.stats import binomtest

    only_challenger = int(((challenger == y) & (baseline != y)).sum())
    only_baseline = int(((challenger != y) & (baseline == y)).sum())
    total = only_challenger + only_baseline
    p = float(binomtest(only_challenger, total, 0.5).pvalue) if total else 1.0
    return p, {"challenger_only_right": only_challenger, "baseline_only_right": only_baseline}


def champion_probabilities(workdir: Path, name: str, version: str, labels: list[str], backbone: Backbone,
                           features: ArtifactRef, row_ids: np.ndarray, texts: list[str]) -> tuple[np.ndarray, str] | str:
    """The champion's class probabilities for the challenger's test rows, float64 (n, len(labels)) with
    columns in `labels` order and rows in `row_ids` order, and how they were computed; or, as a string, why
    the champion cannot be compared.

    Where the champion's frozen part is the challenger's (same backbone, same sequence length, and it trained
    no block below the first block the stored features feed), the champion runs on the *same stored test
    features* the challenger was evaluated on, through the same code: identical models then score
    identically, by construction, and no frozen block runs again. Otherwise the whole saved champion runs on
    the test texts, tokenized as it was trained. Both paths go through `core.model.inference`, in row order.
    """
    from tasks.finetune import SplitFeatures, load_classifier_file
    from core.model.inference import predict_stored, predict_token_ids
    from core.model.graph import encoder_depth

    folder = registry.version_dir(workdir, name, version)
    card = json.loads((folder / "model.json").read_text())
    if sorted(card["labels"]) != sorted(labels):
        return f"the label set changed ({', '.join(card['labels'])} -> {', '.join(labels)})"
    if card.get("backbone_sha256") != backbone.sha256:
        return "the backbone changed, so the champion's inputs are not the challenger's"
    model = load_classifier_file(folder / "model.keras")
    length = int(card["tokenizer"]["sequence_length"])
    champion_frozen = encoder_depth(model) - int(card["unfreeze_top"])
    frozen_blocks = int(features.meta["frozen_blocks"])
    if length == int(features.meta["sequence_length"]) and frozen_blocks <= champion_frozen:
        test = SplitFeatures(features, workdir, "test")
        if list(test.row_ids) != list(row_ids):
            raise ValueError("the stored test features and the evaluation's predictions list different rows; "
                             "re-run evaluate (its artifact does not belong to these features)")
        proba, how = predict_stored(model, test.embeddings, test.hidden, frozen_blocks), "stored test features"
    else:
        proba = predict_token_ids(model, encode_for_model(backbone.path, texts, length))
        how = "whole saved model on the test texts"
    order = [card["labels"].index(label) for label in labels]
    return proba[:, order], how


def cached_champion_probabilities(workdir: Path, name: str, version: str, labels: list[str], backbone: Backbone,
                                  features: ArtifactRef, row_ids: np.ndarray,
                                  texts: list[str]) -> tuple[np.ndarray, str] | str:
    """`champion_probabilities`, computed once per (champion version, test rows): a re-run on unchanged data
    reads them back instead of running the champion again (13 of a warm re-run's 26 s, measured).

    The key covers everything the probabilities depend on: the version (its name holds its model's hash, and
    the gate verifies its files first), the stored features' hash, the rows, their texts and the label order.
    Kept under <workdir>/cache/champion-scores/; a missing or unreadable entry is computed again."""
    key = sha256_hex(version, features.sha256, json.dumps(labels), json.dumps([str(r) for r in row_ids]), *texts)
    path = registry.champion_scores_dir(workdir) / f"{version}-{key[:16]}.npz"
    try:
        with np.load(path, allow_pickle=False) as stored:
            return stored["proba"], f"{stored['how']} (cached)"
    except (OSError, KeyError, ValueError):
        pass
    scored = champion_probabilities(workdir, name, version, labels, backbone, features, row_ids, texts)
    if not isinstance(scored, str):
        with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, proba=scored[0], how=np.array(scored[1]))
    return scored


def gate(evaluation: ArtifactRef, features: ArtifactRef, cfg: GateConfig, name: str, backbone: Backbone,
         workdir: Path, split: SplitConfig | None = None) -> GateDecision:
    """Decide whether the evaluated challenger should replace the current champion of `name`."""
    if estimate := evaluation.meta.get("estimate"):  # no test split to compare on: say so, `gate.unmeasurable` decides
        promote, reason, version = unmeasurable_verdict(estimate, cfg.unmeasurable, workdir, name)
        log.warning("gate: %s", reason)
        return GateDecision(promote=promote, decision="promote" if promote else "keep champion", reason=reason,
                            test="none: the test split is too small to measure (cross-validated estimate instead)",
                            champion_version=version, confidence=cfg.confidence, n=0,
                            estimate={"why": estimate["why"], **estimate["estimate"]})
    predictions = pq.read_table(evaluation.resolve(workdir) / "predictions.parquet").to_pandas()
    labels = list(evaluation.meta["labels"])
    y = predictions["label"].map(labels.index).to_numpy()
    challenger = predictions["predicted_label"].map(labels.index).to_numpy()
    common = dict(test=f"paired bootstrap of macro-F1 ({cfg.bootstrap_samples} resamples), one-sided",
                  confidence=cfg.confidence, n=len(y))
    current = registry.champion(workdir, name)
    if current is None:
        majority = np.full_like(y, labels.index(evaluation.meta["test"]["majority_baseline"]["label"]))
        return _decide(y, challenger, majority, labels, cfg, common, None, "the majority-class predictor")
    registry.verify(workdir, name, current["version"])
    if split is not None and (why := split_change(workdir, name, current["version"], split)
                              or trained_without_holdout(workdir, name, current["version"])):
        return _split_changed(why, y, challenger, labels, evaluation, cfg, common, current["version"])
    scored = cached_champion_probabilities(workdir, name, current["version"], labels, backbone, features,
                                           predictions["row_id"].to_numpy(), predictions["text"].tolist())
    if isinstance(scored, str):
        promote = cfg.on_label_change == "promote"
        return GateDecision(promote=promote, decision="promote" if promote else "keep champion",
                            reason=f"not comparable with champion {current['version']}: {scored}; "
                                   f"gate.on_label_change={cfg.on_label_change}",
                            champion_version=current["version"], **{**common, "test": "none (not comparable)"})
    baseline, how = scored
    log.info("gate: champion %s scored on the %s", current["version"], how)
    return _decide(y, challenger, baseline.argmax(axis=1), labels, cfg, {**common, "champion_scored_on": how},
                   current["version"], f"champion {current['version']}")


def _decide(y, challenger, baseline, labels, cfg: GateConfig, common: dict, champion_version: str | None,
            against: str) -> GateDecision:
    boot = paired_bootstrap(y, challenger, baseline, len(labels), cfg.bootstrap_samples, cfg.confidence,
                            power=cfg.power)
    p, discordant = mcnemar(y, challenger, baseline)
    f1 = macro_f1_many(y[None], challenger[None], len(labels))[0]
    base = macro_f1_many(y[None], baseline[None], len(labels))[0]
    promote = boot["lower_bound"] > 0
    verdict = "better" if promote else "not better with confidence"
    reason = (f"challenger macro-F1 {f1:.4f} vs {against} {base:.4f}: difference {boot['difference']:+.4f}, "
              f"{cfg.confidence:.0%} lower bound {boot['lower_bound']:+.4f} -> {verdict}")
    if unmeasured := [label for k, label in enumerate(labels) if not (y == k).any()]:
        reason += (f". Not measured: {', '.join(map(repr, unmeasured))} "
                   f"{'has' if len(unmeasured) == 1 else 'have'} no test rows, so this comparison does not cover "
                   f"{'it' if len(unmeasured) == 1 else 'them'} (macro-F1 counts each as 0 for both models)")
    log.info("gate: %s", reason)
    note = detectable_note(boot, len(y), sum(discordant.values()), cfg)
    log.log(logging.WARNING if boot["detectable_difference"] > cfg.detectable_warn_above else logging.INFO,
            "gate: %s", note)
    return GateDecision(promote=promote, decision="promote" if promote else "keep champion", reason=reason,
                        champion_version=champion_version, challenger_macro_f1=float(f1), baseline_macro_f1=float(base),
                        mcnemar_p=p, discordant=discordant, detectable_note=note, **boot, **common)


def detectable_note(boot: dict[str, Any], n: int, discordant: int, cfg: GateConfig) -> str:
    """What this decision could detect, in words; plainly a warning when that is more than `detectable_warn_above`."""
    if boot["standard_error"] == 0:
        return (f"the two models predict alike on all {n} test rows ({discordant} discordant): every resampled "
                "difference is 0, so there is no difference to detect")
    text = (f"on these {n} test rows the gate promotes a true macro-F1 gain of {boot['detectable_difference']:.3f} "
            f"or more {boot['power']:.0%} of the time at {cfg.confidence:.0%} confidence (an observed gain must "
            f"exceed {boot['promotion_threshold']:.3f} to promote)")
    if boot["detectable_difference"] > cfg.detectable_warn_above:
        text = (f"too few test rows to see a small gain: {text}. That is more than "
                f"{cfg.detectable_warn_above * 100:.0f} points of macro-F1, so smaller real improvements are "
                "kept out; label more data (the test split grows with it)")
    return text


def split_change(workdir: Path, name: str, version: str, split: SplitConfig) -> str | None:
    """Why the champion's test rows are not today's, if the split settings in its lineage differ from `split`;
    None if they are the same (or the lineage predates recording them)."""
    try:
        recorded = json.loads((registry.version_dir(workdir, name, version) / "lineage.json").read_text())
        recorded = recorded["config"]["split"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    changed = [f"{key} {recorded.get(key)!r} -> {value!r}" for key, value in split.model_dump(mode="json").items()
               if recorded.get(key) != value]
    if not changed:
        return None
    return f"the split settings changed ({'; '.join(changed)}), so the champion may have trained on today's test rows"


def trained_without_holdout(workdir: Path, name: str, version: str) -> str | None:
    """Why the champion's test figures are not comparable if it was trained in estimate mode (every labelled
    row, today's test rows among them: `tasks.estimate`); None otherwise."""
    try:
        recorded = json.loads((registry.version_dir(workdir, name, version) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if not recorded.get("estimate"):
        return None
    return ("the champion was trained on every labelled row (the test split was too small to measure then), so "
            "today's test rows were among its training rows")


def _split_changed(why: str, y, challenger, labels, evaluation: ArtifactRef, cfg: GateConfig, common: dict,
                   version: str) -> GateDecision:
    """The decision when the champion's split is not today's: `gate.on_split_change` decides."""
    log.warning("gate: not comparable with champion %s: %s; gate.on_split_change=%s", version, why,
                cfg.on_split_change)
    if cfg.on_split_change == "baseline":
        majority = np.full_like(y, labels.index(evaluation.meta["test"]["majority_baseline"]["label"]))
        return _decide(y, challenger, majority, labels, cfg, common, version,
                       f"the majority-class predictor (not comparable with champion {version}: {why}; "
                       "gate.on_split_change=baseline)")
    promote = cfg.on_split_change == "promote"
    return GateDecision(promote=promote, decision="promote" if promote else "keep champion",
                        reason=f"not comparable with champion {version}: {why}; "
                               f"gate.on_split_change={cfg.on_split_change}",
                        champion_version=version, **{**common, "test": "none (not comparable)"})


gate_task = step_task(gate, cached=False)
