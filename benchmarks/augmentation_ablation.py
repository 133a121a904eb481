"""Does EDA augmentation help this backbone? Test macro-F1 with and without it at 250, 500 and all training rows.

For each training size (`data.max_train_rows`) and augmentation setting, three seeds (the seed changes the
augmentation and the training, never the split), mean and standard deviation of test accuracy and macro-F1.
"Paper" is Wei & Zou's recommendation for the size (about 500 rows: alpha 0.05, 16 copies; about 2,000: 0.05,
8). Settings are otherwise the defaults (`train.unfreeze_top` as configured), unless given on the command line:

    .venv/bin/python benchmarks/augmentation_ablation.py [--unfreeze-top N] [--sizes 250,500,0] [--seeds 1,2,3]

The steps run as plain functions in one process, sharing one workdir, so identical steps are computed once.
Finished runs are kept in benchmarks/ablation-runs-unfreeze<N>.json (the raw figures), so an interrupted
ablation resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flows  # noqa: E402,F401  (quiet library defaults)
from benchmarks.results import table, write_section  # noqa: E402

SETTINGS = {  # name -> augment overrides
    "none": {"n_aug": 0},
    "paper": {"n_aug": "paper"},
}


def one_run(workdir: Path, size: int, setting: str, seed: int, unfreeze_top: int) -> dict:
    from core.model.backbone import Backbone
    from flows import dag
    from schemas.config import RetrainConfig

    overrides = {"data.conflicts": "drop", "data.max_train_rows": size, "seed": seed,
                 "train.unfreeze_top": unfreeze_top, **{f"augment.{k}": v for k, v in SETTINGS[setting].items()}}
    cfg = RetrainConfig.from_parameters(workdir=workdir, overrides=overrides)
    backbone = Backbone.resolve(None)
    started = time.perf_counter()
    done = dag.run(dag.PlainSteps(cfg), cfg, until="evaluate", backbone=backbone)  # the retrain DAG's steps
    splits, augmented, test = done["split"], done["augment"], done["evaluate"].meta["test"]
    return {"size": size, "setting": setting, "seed": seed, "train_rows": splits.meta["split_rows"]["train"],
            "augmented_rows": augmented.meta["augmented_rows"], "n_aug": augmented.meta["n_aug"],
            "alpha": augmented.meta["strengths"]["sr"], "accuracy": test["accuracy"], "macro_f1": test["macro_f1"],
            "seconds": round(time.perf_counter() - started, 1)}


def summarise(runs: list[dict], unfreeze_top: int) -> str:
    rows = []
    sizes = sorted({r["size"] for r in runs}, key=lambda s: s or 10**9)
    for size in sizes:
        for setting in SETTINGS:
            group = [r for r in runs if r["size"] == size and r["setting"] == setting]
            if not group:
                continue
            f1 = [r["macro_f1"] for r in group]
            acc = [r["accuracy"] for r in group]
            sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
            rows.append([group[0]["train_rows"], setting, f"{group[0]['n_aug']} x, alpha {group[0]['alpha']}",
                         len(group), f"{statistics.mean(f1):.3f} ± {sd(f1):.3f}",
                         f"{statistics.mean(acc):.3f} ± {sd(acc):.3f}",
                         f"{statistics.mean(r['seconds'] for r in group):.0f}"])
    return table(["training rows", "augmentation", "copies, strength", "seeds", "test macro-F1 (mean ± sd)",
                  "test accuracy (mean ± sd)", "s per run"], rows) + (
        f"\n\n`train.unfreeze_top={unfreeze_top}`; 1,002 test sentences; `python benchmarks/augmentation_ablation.py"
        f" --unfreeze-top {unfreeze_top}`.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unfreeze-top", type=int, default=None, help="default: the configured default")
    parser.add_argument("--sizes", default="250,500,0", help="data.max_train_rows values (0 = all)")
    parser.add_argument("--seeds", default="1,2,3")
    args = parser.parse_args()
    from schemas.config import TrainConfig

    unfreeze_top = TrainConfig().unfreeze_top if args.unfreeze_top is None else args.unfreeze_top
    done_file = Path(__file__).resolve().parent / f"ablation-runs-unfreeze{unfreeze_top}.json"
    runs = json.loads(done_file.read_text()) if done_file.exists() else []
    with tempfile.TemporaryDirectory() as tmp:
        for size in [int(s) for s in args.sizes.split(",")]:
            for setting in SETTINGS:
                for seed in [int(s) for s in args.seeds.split(",")]:
                    if any(r["size"] == size and r["setting"] == setting and r["seed"] == seed for r in runs):
                        continue
                    result = one_run(Path(tmp), size, setting, seed, unfreeze_top)
                    print(json.dumps(result), file=sys.stderr, flush=True)
                    runs.append(result)
                    done_file.write_text(json.dumps(runs, indent=1))
    write_section(f"augmentation_ablation_unfreeze{unfreeze_top}", summarise(runs, unfreeze_top))


if __name__ == "__main__":
    main()
