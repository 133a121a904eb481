"""Step 5b, finetune: train the classifier on the frozen backbone's stored outputs and save it as one model.

The recipe and the regimes (finetune, fewshot, frozen, auto) are `core.model.fitting`'s: this step reads the
stored features, resolves the regime, trains (one model or a seed ensemble) and saves the model, its card and
its training record as one content-addressed artifact.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from core.model.backbone import Backbone, load_tokenizer
from core.model.classifier import CARD_FILE, MODEL_FILE, SplitFeatures
from core.model.fitting import class_weights, ensemble_figures, fit, resolve_regime, selection_rule, training_rows
from core.model.hardware import resolve_mixed_precision, strategy, visible_gpus
from core.storage.artifacts import ArtifactRef, artifact_dir, staging, store_dir, write_json_atomic
from core.storage.caching import step_task
from schemas.config import TrainConfig

log = logging.getLogger(__name__)


def finetune(features: ArtifactRef, cfg: TrainConfig, seed: int, backbone: Backbone, workdir: Path) -> ArtifactRef:
    """Train the classifier by the recipe above; save it (`model.keras`) and its card (`model.json`).

    Returns the reference of the model folder; `meta` has the best epoch, how it was selected, the
    validation figures and the per-epoch curves. With `cfg.ensemble = k > 1`, k members train by the same
    recipe on the same stored features, member i with seed `seed + i` (each the model a single run with that
    seed trains), each keeping its own best epoch on validation; the saved model averages their probabilities
    (`core.model.graph.build_ensemble`), and the validation figures are the ensemble's (the members' validation
    probabilities averaged the same way), each member's beside them under `ensemble`.
    """
    import keras

    from core.model.graph import build_classifier, build_ensemble
    from core.model.saving import save_reproducibly

    labels = list(features.meta["labels"])
    frozen_blocks, unfreeze_top = int(features.meta["frozen_blocks"]), int(features.meta["unfreeze_top"])
    train, val = SplitFeatures(features, workdir, "train"), SplitFeatures(features, workdir, "val")
    weights = class_weights(train.labels, len(labels)) if cfg.class_weights else {i: 1.0 for i in range(len(labels))}
    selection = selection_rule(val.labels, labels, cfg.min_val_per_class)
    gpus = visible_gpus()
    mixed = resolve_mixed_precision(cfg.mixed_precision, gpus)
    regime, regime_reason, cfg, frozen_blocks = resolve_regime(cfg, train, labels, features, backbone)
    unfreeze_top = 0 if regime == "frozen" else unfreeze_top
    log.info("finetune: regime %s (%s)", regime, regime_reason)
    train_rows = {"labelled": int((~train.is_augmented).sum()), "augmented": int(train.is_augmented.sum()),
                  "label_templates": 0}
    labelled = len(train.labels)
    train = training_rows(train, regime, labels, cfg, features, backbone, workdir)
    train_rows["label_templates"] = len(train.labels) - labelled
    phase = {"fewshot": "fewshot", "frozen": "head"}.get(regime, "joint" if unfreeze_top else "head")
    # Keras names unnamed layers from per-process counters ("dropout_6" once an embed step has built a backbone
    # in this process), and the names are written into the saved file: start from a clean slate so the file
    # depends on the model alone, whichever runner or process trained it.
    keras.backend.clear_session()
    members = []
    for index in range(cfg.ensemble):
        member_seed = seed + index
        keras.utils.set_random_seed(member_seed)
        with strategy(gpus):
            curve, trained_backbone, head, plan, val_proba = fit(
                regime, train, val, weights, cfg, member_seed, backbone, frozen_blocks, len(labels), mixed,
                select=selection is None, val_probabilities=cfg.ensemble > 1)
        scores = curve["val_macro_f1"]
        best = int(np.argmax(scores)) if selection is None and regime != "fewshot" else len(scores) - 1
        history = {k: [round(float(v), 5) for v in vals] for k, vals in curve.items()}
        members.append({"seed": member_seed, "backbone": trained_backbone, "head": head, "val_proba": val_proba,
                        "history": history, "plan": plan,
                        "summary": {"best_epoch": best + 1, "epochs_run": len(scores),
                                    "best_val_loss": round(float(curve["val_loss"][best]), 5),
                                    "best_val_macro_f1": round(float(scores[best]), 5),
                                    "best_val_accuracy": round(float(curve["val_accuracy"][best]), 5)}})
        if cfg.ensemble > 1:
            log.info("finetune: member %d of %d (seed %d): epoch %d of %d kept, val macro-F1 %.4f", index + 1,
                     cfg.ensemble, member_seed, best + 1, len(scores), scores[best])

    rule = selection or "best epoch by validation macro-F1"
    if regime == "fewshot":
        rule = ("none: the few-shot regime keeps the model after its last contrastive epoch, as SetFit does "
                "(validation figures reported, not used)")
    if cfg.ensemble == 1:
        member = members[0]
        history = {phase: member["history"]}
        summary = {**member["summary"], "selection": rule, "budget": member["plan"],
                   "regime": regime, "regime_reason": regime_reason,
                   "phases": {p: len(c["loss"]) for p, c in history.items()}}
        classifier = build_classifier(member["backbone"], member["head"])
    else:
        history = {f"{phase}, member {i} (seed {m['seed']})": m["history"] for i, m in enumerate(members, start=1)}
        figures = ensemble_figures(np.mean([m["val_proba"] for m in members], axis=0), val.labels, len(labels))
        summary = {"best_epoch": [m["summary"]["best_epoch"] for m in members],
                   "epochs_run": [m["summary"]["epochs_run"] for m in members],
                   "best_val_loss": figures["val_loss"], "best_val_macro_f1": figures["val_macro_f1"],
                   "best_val_accuracy": figures["val_accuracy"],
                   "selection": f"{rule}, per member; the saved model averages the members' probabilities",
                   "budget": members[0]["plan"], "phases": {p: len(c["loss"]) for p, c in history.items()},
                   "regime": regime, "regime_reason": regime_reason,
                   "ensemble": {"members": cfg.ensemble, **figures,
                                "member_figures": [{"seed": m["seed"], **m["summary"]} for m in members]}}
        classifier = build_ensemble([m["backbone"] for m in members], [m["head"] for m in members], frozen_blocks)
    tokenizer = load_tokenizer(backbone.path)  # the card records its settings as they are, whatever the backbone
    card = {
        "labels": labels,
        "backbone_sha256": backbone.sha256,
        "unfreeze_top": unfreeze_top,
        "tokenizer": {"strip_accents": bool(tokenizer.strip_accents), "lowercase": bool(getattr(tokenizer, "lowercase_text", tokenizer.lowercase)),
                      "sequence_length": features.meta["sequence_length"]},
        "train": cfg.model_dump(mode="json"),
        "hardware": {"gpus": gpus, "mixed_precision": mixed},
        "seed": seed,
        "train_rows": train_rows,
        "history": history,
        "features_sha256": features.sha256,
        **summary,
    }
    with staging(artifact_dir(workdir, "finetune"), is_dir=True) as folder:
        save_reproducibly(classifier, folder / MODEL_FILE)
        write_json_atomic(folder / CARD_FILE, card)
        ref = store_dir(workdir, "finetune", folder, rows=len(train.labels),
                        meta={"labels": labels, "frozen_blocks": frozen_blocks, "history": history, **summary,
                              "rows_in": int(len(train.labels) + len(val.labels))})
    if regime == "fewshot" and cfg.ensemble == 1:
        log.info("finetune: few-shot regime, %d pairs in %d steps: val macro-F1 %.4f, val accuracy %.4f",
                 summary["budget"]["pairs"], summary["budget"]["steps"], summary["best_val_macro_f1"],
                 summary["best_val_accuracy"])
    elif cfg.ensemble == 1:
        log.info("finetune: epoch %d of %d kept (%s): val macro-F1 %.4f, val accuracy %.4f", summary["best_epoch"],
                 summary["epochs_run"], summary["selection"], summary["best_val_macro_f1"],
                 summary["best_val_accuracy"])
    else:
        log.info("finetune: ensemble of %d (seeds %s): val macro-F1 %.4f, val accuracy %.4f", cfg.ensemble,
                 ", ".join(str(m["seed"]) for m in members), summary["best_val_macro_f1"], summary["best_val_accuracy"])
    return ref


finetune_task = step_task(finetune)
