"""Active learning, simulated: does labelling what `flows.suggest` picks beat labelling at random?

The loop a bank's analyst runs, on a dataset with known labels: start from 16 labelled training rows per class;
the pool is the rest of the training split with its labels hidden; each round a model is trained on the labelled
rows, 48 pool rows are chosen, and their labels revealed; 5 rounds. Arms, on the same start and seed:
- `badge`: BADGE (`tasks.suggest.badge_order`: gradient embeddings, k-means++ seeding; `--method badge`);
- `margin_kmeans`: flows.suggest's default, margin-weighted k-means (Zhdanov 2019, arXiv:1901.05954; `tasks.suggest.margin_kmeans_order`):
  the 480 smallest margins clustered into 48 by k-means weighted by uncertainty, the row nearest each centre;
- `margin`: uncertainty alone (the 48 smallest margins between the top two probabilities), the baseline BADGE
  must beat according to the literature;
- `random`: 48 pool rows drawn uniformly.
Each round's model is a logistic regression (C=3, as README's "frozen embeddings + LR" baseline) on the frozen
backbone's pooled embeddings, which the feature cache holds: a round costs a fraction of a second, where training
ours would cost a minute (at 16-64 per class the frozen head and LR on the embeddings are level, README's learning
curve). Macro-F1 on the whole test split against labels used, mean ± sd over seeds; and the same models with
self-training (pseudo-labels of the round's model on the pool where its top probability >= tau, added to the
labelled rows for a second fit; at most the 1,000 most confident, to keep a round cheap), on validation (where a
default would be chosen) and test.

Also times `python -m flows.suggest` choosing 100 rows from a 10,000-row pool, cold and with the pool cached.
The bundled data has 4,846 sentences, so the pool is each of them once plus edited copies (every number in the
sentence changed, or a leading "Meanwhile, ") up to 10,000: near-duplicates of real sentences, which the
suggestion must skip, as a news stream's reworded repeats.

Writes the "active_learning" section of RESULTS.md and docs/active-learning.png; raw runs in
benchmarks/active-learning-runs.json.

    .venv/bin/python benchmarks/active_learning.py [--seeds 10] [--no-timing | --timing-only] [--data CSV --name NAME]

Near-duplicates of labelled rows (cosine >= 0.95) are excluded for both suggest methods, as flows.suggest does.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import flows  # noqa: E402,F401
from benchmarks.results import table, write_section  # noqa: E402

RUNS = Path(__file__).resolve().parent / "active-learning-runs.json"
PLOT = ROOT / "docs" / "active-learning.png"
START_PER_CLASS, BATCH, ROUNDS = 16, 48, 5
ARMS = ("badge", "margin_kmeans", "margin", "random")
TAUS = (0.9,)
MAX_PSEUDO = 1000  # the most confident pseudo-labels kept per round (a fit on 3,400 rows costs ~15 s here)


def rows(data: Path | None, workdir: Path):
    """Every validated row (text, label, split) of `data` (None: the bundled data), split as retrain splits."""
    import pyarrow.parquet as pq

    from schemas.config import RetrainConfig
    from tasks.split import split
    from tasks.validate import validate

    cfg = RetrainConfig.from_parameters(data=data, workdir=workdir, overrides={"data.conflicts": "drop"})
    splits = split(validate(cfg.data, workdir), cfg.split, 0, cfg.data.min_per_class, workdir)
    return pq.read_table(splits.resolve(workdir), columns=["text", "label", "split"]).to_pandas()


def dataset(data: Path | None, workdir: Path):
    """(every validated row, their pooled embeddings (n, d) float32 from the workdir's feature cache)."""
    from core.model.backbone import Backbone, encode_for_model
    from core.model.features import cached_features

    frame = rows(data, workdir)
    backbone = Backbone.resolve(None)
    sequences = encode_for_model(backbone.path, frame["text"].tolist(), 128)
    embeddings, _, _ = cached_features(backbone, sequences, backbone.architecture.blocks, workdir)
    return frame, embeddings


def fit(x, y):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=3, max_iter=1000).fit(x, y)


def choose(arm: str, model, pool: np.ndarray, labelled: np.ndarray, emb: np.ndarray, rng, seed: int) -> np.ndarray:
    """`BATCH` indices (into `emb`) of the pool rows `arm` picks."""
    from tasks.suggest import badge_order, gradient_embeddings, margin_kmeans_order, near_known

    if arm == "random":
        return rng.choice(pool, BATCH, replace=False)
    proba = model.predict_proba(emb[pool])
    if arm == "margin":
        top = np.sort(proba, axis=1)
        return pool[np.argsort(top[:, -1] - top[:, -2], kind="stable")[:BATCH]]
    blocked = near_known(emb[pool], emb[labelled], 0.95)
    if arm == "margin_kmeans":
        return pool[np.asarray(margin_kmeans_order(proba, emb[pool], BATCH, seed, blocked=blocked))]
    picked = badge_order(gradient_embeddings(proba, emb[pool]), emb[pool], BATCH, seed, blocked=blocked)
    if len(picked) < BATCH:  # the rest are near-duplicates: fill from the blocked ones, most uncertain first
        rest = [i for i in np.argsort(proba.max(axis=1)) if i not in set(picked)]
        picked += rest[: BATCH - len(picked)]
    return pool[np.asarray(picked)]


def simulate(frame, emb, seed: int) -> dict:
    """One seed: every arm's 6 points (start + 5 rounds): labels used, test and validation macro-F1, with and
    without self-training at each tau."""
    from sklearn.metrics import f1_score

    labels = sorted(frame["label"].unique())
    y = frame["label"].map({label: i for i, label in enumerate(labels)}).to_numpy()
    where = {s: np.flatnonzero(frame["split"].to_numpy() == s) for s in ("train", "val", "test")}
    rng = np.random.default_rng(seed)
    start = np.concatenate([rng.choice(where["train"][y[where["train"]] == k], START_PER_CLASS, replace=False)
                            for k in range(len(labels))])
    out = {"seed": seed}

    def f1(model, part):
        return float(f1_score(y[where[part]], model.predict(emb[where[part]]), average="macro"))

    for arm in ARMS:
        arm_rng = np.random.default_rng(1000 + seed)
        labelled = start.copy()
        points = []
        for round_ in range(ROUNDS + 1):
            model = fit(emb[labelled], y[labelled])
            pool = np.setdiff1d(where["train"], labelled)
            point = {"labels": len(labelled), "test": f1(model, "test"), "val": f1(model, "val")}
            proba = model.predict_proba(emb[pool])
            for tau in TAUS:
                confident = np.flatnonzero(proba.max(axis=1) >= tau)
                sure = pool[confident[np.argsort(-proba.max(axis=1)[confident], kind="stable")[:MAX_PSEUDO]]]
                pseudo = model.predict(emb[sure]) if len(sure) else np.zeros(0, dtype=y.dtype)
                st = (fit(np.concatenate([emb[labelled], emb[sure]]), np.concatenate([y[labelled], pseudo]))
                      if len(sure) else model)
                point[f"self_{tau}"] = {"test": f1(st, "test"), "val": f1(st, "val"), "pseudo": len(sure),
                                        "pseudo_accuracy": float((pseudo == y[sure]).mean()) if len(sure) else None}
            points.append(point)
            if round_ < ROUNDS:
                labelled = np.concatenate([labelled, choose(arm, model, pool, labelled, emb, arm_rng, seed)])
        out[arm] = points
    return out


def labels_to_reach(points: list[dict], target: float) -> float | None:
    """Labels at which a curve first reaches `target` (linear between points); None if it never does."""
    for a, b in zip(points, points[1:]):
        if a["f1"] >= target:
            return a["labels"]
        if b["f1"] >= target:
            return a["labels"] + (target - a["f1"]) / (b["f1"] - a["f1"]) * (b["labels"] - a["labels"])
    return points[0]["labels"] if points and points[0]["f1"] >= target else None


def pool_10k(frame) -> list[str]:
    """The bundled sentences once each, then edited copies (numbers changed, else a leading "Meanwhile, ") to
    10,000 rows."""
    texts = frame["text"].tolist()
    out, i = list(texts), 0
    while len(out) < 10_000:
        text = texts[i % len(texts)]
        bump = 1 + i // len(texts)
        edited = re.sub(r"\d+", lambda m: str(int(m.group()) + bump), text)
        out.append(edited if edited != text else f"Meanwhile, {text[0].lower()}{text[1:]}" + " " * (bump - 1))
        i += 1
    return out


def time_suggest(frame, tmp: Path) -> dict:
    """`python -m flows.suggest --n 100` on a 10,000-row pool: cold (the pool's embeddings computed) and again
    (cached), with a frozen-backbone model trained on 16 rows per class by `python -m flows.retrain`."""
    import pandas as pd

    from benchmarks.results import run_retrain

    work = tmp / "timing"
    rng = np.random.default_rng(0)
    train = frame[frame["split"] == "train"]
    labelled = pd.concat([rows.iloc[rng.permutation(len(rows))[:START_PER_CLASS]] for _, rows in train.groupby("label")])
    labelled = pd.concat([labelled, frame[frame["split"] != "train"]])
    labelled[["text", "label"]].to_csv(tmp / "labelled.csv", index=False)
    run_retrain("--data", str(tmp / "labelled.csv"), "--workdir", str(work), "--set", "train.unfreeze_top=0",
                "--set", "augment.n_aug=0", "--set", "data.min_per_class=3", "--set", "data.conflicts=drop",
                "--set", "gate.on_label_change=promote")
    pd.DataFrame({"text": pool_10k(frame)}).to_csv(tmp / "pool.csv", index=False)
    out = {}
    for run in ("cold", "cached"):
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "flows.suggest", "--pool", str(tmp / "pool.csv"), "--n", "100",
                                 "--out", str(tmp / "next.csv"), "--workdir", str(work)], cwd=ROOT,
                                capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"flows.suggest failed:\n{result.stderr[-3000:]}")
        out[run] = round(time.perf_counter() - started, 1)
        out[f"{run}_log"] = [line for line in result.stderr.splitlines() if "suggest:" in line][-1:]
    out["rows_written"] = len(pd.read_csv(tmp / "next.csv"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--data", type=Path, default=None, help="another labelled CSV (text, label) to simulate on")
    parser.add_argument("--name", default="Financial PhraseBank", help="the dataset's name in the results")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--timing-only", action="store_true", help="time flows.suggest on the bundled data only")
    args = parser.parse_args()
    runs = json.loads(RUNS.read_text()) if RUNS.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.timing_only:
            runs["timing"] = time_suggest(rows(None, Path(tmp) / "work"), Path(tmp))
            RUNS.write_text(json.dumps(runs, indent=1))
            return write(runs)
        frame, emb = dataset(args.data, Path(tmp) / "work")
        started = time.perf_counter()
        seeds = []
        for seed in range(1, args.seeds + 1):
            seeds.append(simulate(frame, emb, seed))
            print(f"seed {seed}: " + ", ".join(f"{arm} {seeds[-1][arm][-1]['test']:.3f}" for arm in ARMS)
                  + f" ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        runs[args.name] = {"seeds": seeds,
                           "rows": {s: int((frame["split"] == s).sum()) for s in ("train", "val", "test")},
                           "classes": int(frame["label"].nunique())}
        runs[args.name]["simulation_seconds"] = round(time.perf_counter() - started, 1)
        if not args.no_timing:
            runs["timing"] = time_suggest(rows(None, Path(tmp) / "work") if args.data else frame, Path(tmp))
    RUNS.write_text(json.dumps(runs, indent=1))
    write(runs)


def curve(seeds: list[dict], arm: str, key: str = "test", self_tau: float | None = None) -> list[dict]:
    """Mean and sd per round of one arm's macro-F1."""
    points = []
    for i in range(ROUNDS + 1):
        values = [(s[arm][i][f"self_{self_tau}"] if self_tau else s[arm][i])[key] for s in seeds]
        points.append({"labels": seeds[0][arm][i]["labels"], "f1": statistics.mean(values),
                       "sd": statistics.stdev(values) if len(values) > 1 else 0.0})
    return points


def write(runs: dict) -> None:
    """The RESULTS.md section and the plot, from the raw runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    body, datasets = "", [k for k in runs if k != "timing"]
    figure, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.2), squeeze=False)
    for axis, name in zip(axes[0], datasets):
        seeds = runs[name]["seeds"]
        rows = []
        for arm in ARMS:
            for tau in (None, *TAUS):
                test, val = curve(seeds, arm, "test", tau), curve(seeds, arm, "val", tau)
                rows.append([arm + (f" + self-training (tau {tau})" if tau else ""),
                             *[f"{p['f1']:.3f} ± {p['sd']:.3f}" for p in test],
                             f"{statistics.mean(p['f1'] for p in val):.3f}"])
                if tau is None or tau == TAUS[0]:
                    axis.errorbar([p["labels"] for p in test], [p["f1"] for p in test], yerr=[p["sd"] for p in test],
                                  marker="o", capsize=3, linestyle="-" if tau is None else "--",
                                  label=arm + (f" + self-training ({tau})" if tau else ""))
        random_final = curve(seeds, "random")[-1]["f1"]
        reach = {arm: labels_to_reach(curve(seeds, arm), random_final) for arm in ARMS}
        gain3 = {arm: curve(seeds, arm)[3]["f1"] - curve(seeds, "random")[3]["f1"] for arm in ARMS}
        labels_axis = [p["labels"] for p in curve(seeds, "random")]
        body += (f"### {name} ({runs[name]['classes']} classes; train / val / test rows "
                 f"{runs[name]['rows']['train']} / {runs[name]['rows']['val']} / {runs[name]['rows']['test']}; "
                 f"{len(seeds)} seeds; simulation {runs[name]['simulation_seconds']} s)\n\n")
        body += table(["arm", *[f"test macro-F1 at {n} labels" for n in labels_axis], "val macro-F1, mean of rounds"],
                      rows)
        body += ("\n\nLabels needed to reach the random arm's final test macro-F1 "
                 f"({random_final:.3f} at {labels_axis[-1]} labels): "
                 + ", ".join(f"{arm} {v:.0f}" if v is not None else f"{arm} not reached" for arm, v in reach.items())
                 + "".join(f"; {1 - reach[arm] / labels_axis[-1]:.0%} fewer than random for {arm}"
                           for arm in ("margin_kmeans", "badge", "margin") if reach[arm])
                 + ". Test macro-F1 over random after 3 rounds: "
                 + ", ".join(f"{arm} {v:+.3f}" for arm, v in gain3.items() if arm != "random") + ".\n\n")
        axis.set_xlabel("labels used")
        axis.set_ylabel("test macro-F1")
        axis.set_title(f"Active learning, {name} ({len(seeds)} seeds)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    if "timing" in runs:
        t = runs["timing"]
        body += (f"### Suggesting 100 from a 10,000-row pool (`python -m flows.suggest`, process start included)\n\n"
                 f"cold (the pool's embeddings computed): {t['cold']} s; pool cached: {t['cached']} s; "
                 f"{t['rows_written']} rows written. Its log: {' '.join(t['cached_log'])}\n\n")
    body += ("Each round's model: logistic regression (C=3) on the cached pooled embeddings. Raw runs: "
             "benchmarks/active-learning-runs.json; plot: docs/active-learning.png. Timings on the shared 2-core "
             "machine, under load from other work.")
    write_section("active_learning", body)
    figure.tight_layout()
    PLOT.parent.mkdir(exist_ok=True)
    figure.savefig(PLOT, dpi=110)


if __name__ == "__main__":
    main()
