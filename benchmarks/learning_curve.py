"""Learning curve: quality against the number of labelled rows, ours against the baselines, on one test split.

A user with n labelled rows is simulated by a file holding n training rows (8, 16, 32, 64 per class, or 250,
500, 1,000 stratified, or all), validation rows in the split's own proportion to them (a user with 250 rows has
~35 for validation, so selection is as noisy as theirs), and the whole test split, which stays the same at
every size. The split is a hash of each sentence, so every row keeps its split in the smaller file. Each
seed draws another sample of rows and trains with that seed. Methods, all on the same rows:
- TF-IDF (1-2 grams) + logistic regression, C and class weighting chosen on the validation rows;
- logistic regression on the frozen backbone's pooled embeddings, chosen the same way;
- ours with `train.unfreeze_top=0` (head alone), ours with joint fine-tuning of the top 2 blocks
  (`train.regime=finetune`, the default before `train.regime` existed) and ours with today's defaults
  (`train.regime=auto`: the few-shot regime below `train.fewshot_below` rows in the smallest class).
Mean ± sd of test accuracy and macro-F1 over seeds (5 up to 64 per class, 3 above), and the wall time of ours.
`--methods auto` adds a method to the recorded (size, seed) cuts without re-running the others.
Writes the "learning_curve" section of RESULTS.md and docs/learning-curve.png. With another body
(`--backbone all-mpnet-base-v2`, or LC_BACKBONE=all-mpnet-base-v2 for `make bench B=learning_curve`) every
method runs on that body (the LR baseline on its frozen embeddings), on the same rows and seeds, and the runs,
section and plot are that body's own: benchmarks/learning-curve-runs-all-mpnet-base-v2.json, section
"learning_curve_all-mpnet-base-v2", docs/learning-curve-all-mpnet-base-v2.png. MiniLM's stay as they were.
With other data (`--data wordnet-verbs` / `wordnet-nouns`, benchmarks/wordnet_tasks.py, or a labelled CSV with
columns text,label; LC_DATA for `make bench`) the split is made from that data the same way and the names carry
its name after the body's: benchmarks/learning-curve-runs-wordnet-verbs.json, section
"learning_curve_wordnet-verbs", docs/learning-curve-wordnet-verbs.png (another body: ...-<body>-wordnet-verbs).
The PhraseBank's (no `--data`) stay as they were.

    .venv/bin/python benchmarks/learning_curve.py [--sizes 8pc,16pc,32pc,64pc,250,500,1000,all] [--seeds N]
                                                  [--methods tfidf,lr,frozen,default,auto] [--workdir DIR]
                                                  [--backbone NAME] [--data wordnet-verbs|wordnet-nouns|FILE.csv]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flows  # noqa: E402,F401
from benchmarks.quality import baselines, train_and_score  # noqa: E402
from benchmarks.results import table, write_section  # noqa: E402
from benchmarks.wordnet_tasks import data_file, data_name  # noqa: E402

SIZES = ["8pc", "16pc", "32pc", "64pc", "250", "500", "1000", "all"]
RUNS = Path(__file__).resolve().parent / "learning-curve-runs.json"
PLOT = ROOT / "docs" / "learning-curve.png"
DEFAULT_BODY = "all-minilm-l6-v2"  # the default body: its runs, section and plot keep their names


def outputs(body: str, data: str = "") -> tuple[Path, str, Path]:
    """Where the runs of `body` on `data` (a `--data` value; "" for the bundled PhraseBank) are kept, their
    RESULTS.md section and their plot (MiniLM on the PhraseBank: the historical names)."""
    key = "-".join(part for part in ("" if body == DEFAULT_BODY else body, data_name(data)) if part)
    if not key:
        return RUNS, "learning_curve", PLOT
    return (RUNS.with_name(f"learning-curve-runs-{key}.json"), f"learning_curve_{key}",
            PLOT.with_name(f"learning-curve-{key}.png"))
METHODS = {"tfidf": "TF-IDF + LR", "lr": "frozen embeddings + LR", "frozen": "ours, frozen (unfreeze_top=0)",
           "default": "ours, joint fine-tuning (top 2 blocks)", "auto": "ours, default (train.regime=auto)"}
# What each of ours runs with, on top of the defaults. "default" was the default before train.regime existed
# (joint fine-tuning at every size), so it now names that regime; "auto" is today's default.
OURS = {"frozen": {"train.unfreeze_top": 0}, "default": {"train.regime": "finetune"}, "auto": {}}


def sample(frame, size: str, seed: int):
    """The rows of a simulated user's file: n training rows, validation rows in proportion, every test row."""
    import numpy as np

    rng = np.random.default_rng(seed)
    train, val, test = (frame[frame["split"] == s] for s in ("train", "val", "test"))
    if size == "all":
        return frame
    if size.endswith("pc"):
        per_class = int(size[:-2])
        picked = [rows.index[rng.permutation(len(rows))[:per_class]] for _, rows in train.groupby("label")]
    else:
        share = int(size) / len(train)
        picked = [rows.index[rng.permutation(len(rows))[:max(1, round(share * len(rows)))]]
                  for _, rows in train.groupby("label")]
    chosen_train = train.loc[np.concatenate(picked)]
    share_val = len(val) / len(train) * len(chosen_train) / len(val)
    chosen_val = val.loc[np.concatenate([rows.index[rng.permutation(len(rows))[:max(1, round(share_val * len(rows)))]]
                                         for _, rows in val.groupby("label")])]
    return frame.loc[chosen_train.index.union(chosen_val.index).union(test.index)]


def split_frame(workdir: Path, data: Path | None = None):
    """The rows every cut is sampled from: `data` (a labelled file; None: the bundled PhraseBank) through the
    pipeline's validate (data.conflicts=drop) and split steps in `workdir`; a frame of text, label, split."""
    import pyarrow.parquet as pq

    from schemas.config import RetrainConfig
    from tasks.split import split
    from tasks.validate import validate

    cfg = RetrainConfig.from_parameters(data=data, workdir=workdir, overrides={"data.conflicts": "drop"})
    splits = split(validate(cfg.data, workdir), cfg.split, 0, cfg.data.min_per_class, workdir)
    return pq.read_table(splits.resolve(workdir), columns=["text", "label", "split"]).to_pandas()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--seeds", type=int, default=0, help="seeds per size (default: 5 up to 64 per class, else 3)")
    parser.add_argument("--methods", default=",".join(METHODS), help="methods to run where a recorded (size, seed) "
                        "lacks them (the others' records are kept)")
    parser.add_argument("--workdir", default="", help="keep the workdir (its feature cache) here between runs")
    parser.add_argument("--backbone", default=os.environ.get("LC_BACKBONE", DEFAULT_BODY),
                        help="the body every method runs on (model.backbone; default $LC_BACKBONE, else "
                             f"{DEFAULT_BODY}); each body keeps its own runs, section and plot")
    parser.add_argument("--data", default=os.environ.get("LC_DATA", ""), help="a labelled file (text, label) "
                        "instead of the bundled PhraseBank, or wordnet-verbs / wordnet-nouns (benchmarks/"
                        "wordnet_tasks.py; default $LC_DATA); each data set keeps its own runs, section and plot")
    args = parser.parse_args()
    runs_file, section, plot = outputs(args.backbone, args.data)
    runs = json.loads(runs_file.read_text()) if runs_file.exists() else []
    body = {} if args.backbone == DEFAULT_BODY else {"model.backbone": args.backbone}
    with tempfile.TemporaryDirectory() as tmp:
        # one feature cache: each sentence's frozen features are computed once
        workdir = Path(args.workdir) if args.workdir else Path(tmp) / "work"
        frame = split_frame(workdir, data_file(args.data, Path(tmp)))
        for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
            seeds = range(1, 1 + (args.seeds or (5 if size.endswith("pc") else 3)))
            for seed in seeds:
                result = next((r for r in runs if r["size"] == size and r["seed"] == seed), None)
                wanted = [m for m in args.methods.split(",") if m and (result is None or m not in result)]
                if not wanted:
                    continue
                data = Path(tmp) / f"{size}-{seed}.csv"
                rows = sample(frame, size, seed)
                rows[["text", "label"]].to_csv(data, index=False)
                # The cut holds the whole data set's test split, to measure on: the tiny-data rule (no hold-out
                # when a class's share of the test split would be small) is off, as in peers.py's export.
                overrides = {"seed": seed, "data.min_per_class": 1, "evaluate.min_test_per_class": 0, **body}
                if result is None:
                    result = {"size": size, "seed": seed, "train_rows": int((rows["split"] == "train").sum()),
                              **({"data": data_name(args.data)} if args.data else {})}
                    runs.append(result)
                if {"tfidf", "lr"} & set(wanted):
                    for name, b in baselines(workdir, overrides, data).items():
                        result["tfidf" if name.startswith("TF-IDF") else "lr"] = {k: b[k] for k in ("accuracy", "macro_f1")}
                for method in [m for m in wanted if m in OURS]:
                    result[method] = train_and_score(workdir, {**overrides, **OURS[method]}, data)
                print(json.dumps(result), file=sys.stderr, flush=True)
                runs_file.write_text(json.dumps(runs, indent=1))
    write(runs, section, plot, args.backbone, args.data)


def write(runs: list[dict], section: str = "learning_curve", plot: Path = PLOT, body: str = DEFAULT_BODY,
          data: str = "") -> None:
    """The RESULTS.md section and the plot, from the raw runs of `body` on `data` (a `--data` value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
    rows, curves = [], {m: [] for m in METHODS}
    sizes = [s for s in SIZES if any(r["size"] == s for r in runs)]
    for size in sizes:
        group = [r for r in runs if r["size"] == size]
        row = [size.replace("pc", " per class"), statistics.mean(r["train_rows"] for r in group), len(group)]
        for method in METHODS:
            f1 = [r[method]["macro_f1"] for r in group if method in r]
            acc = [r[method]["accuracy"] for r in group if method in r]
            if not f1:
                row.append("not run")
                continue
            row.append(f"{statistics.mean(acc):.3f} / {statistics.mean(f1):.3f} ± {sd(f1):.3f}"
                       + (f" ({len(f1)} seeds)" if len(f1) != len(group) else ""))
            curves[method].append((statistics.mean(r["train_rows"] for r in group), statistics.mean(f1), sd(f1)))
        joint = [r["default"]["seconds"] for r in group if "default" in r]
        row.append(f"{statistics.mean(joint):.0f}" if joint else "-")
        auto = [r["auto"] for r in group if "auto" in r]
        row.append(f"{statistics.mean(a['seconds'] for a in auto):.0f} ({', '.join(sorted({a.get('regime', '?') for a in auto}))})"
                   if auto else "-")
        rows.append(row)
    text = table(["training rows", "mean n", "seeds", *[f"{m}: acc / macro-F1 ± sd" for m in METHODS.values()],
                  "ours joint s", "ours auto s (regime)"], [[str(x) if not isinstance(x, float) else f"{x:.0f}" for x in r] for r in rows])
    split_name = f"test split of {data_name(data)}" if data else "bundled test split"
    text += (f"\n\nSame test split at every size (the whole {split_name}); validation rows in proportion to the "
             f"training rows. Body: {body}. Raw runs: benchmarks/{runs_file_name(body, data)}; plot: docs/{plot.name}.")
    write_section(section, text)
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for method, label in METHODS.items():
        xs, ys, es = zip(*curves[method]) if curves[method] else ((), (), ())
        axis.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
    axis.set_xscale("log")
    axis.set_xlabel("labelled training rows (log scale)")
    axis.set_ylabel("test macro-F1")
    axis.set_title(f"Learning curve, {data_name(data) or 'Financial PhraseBank'} (same test split), {body}")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    plot.parent.mkdir(exist_ok=True)
    figure.savefig(plot, dpi=110)


def runs_file_name(body: str, data: str = "") -> str:
    return outputs(body, data)[0].name


if __name__ == "__main__":
    main()
