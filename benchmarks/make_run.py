"""Wall time of `make run`'s flow, cold (fresh workdir) and warm (same workdir again), and its test quality;
then the gate and batch prediction as an operator meets them.

Set-up is excluded (it is timed in the closing notes); the command is exactly what `make run` runs after it.
After the warm run, a challenger (the same command with `--set seed=2`) meets the gate against the champion,
and `flows.predict` scores the whole bundled file with the champion.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import run_retrain, table, write_section

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "data" / "financial-phrasebank" / "phrasebank.csv"
ORDER = ("validate", "split", "augment", "tokenize", "embed", "finetune", "evaluate", "promote")


def timed_run(workdir: Path, *extra: str) -> tuple[float, dict]:
    return run_retrain("--set", "data.conflicts=drop", "--workdir", str(workdir), *extra)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cold_s, cold = timed_run(Path(tmp) / "workdir")
        warm_s, warm = timed_run(Path(tmp) / "workdir")  # the gate scores the new champion once here
        again_s, again = timed_run(Path(tmp) / "workdir")  # ... and reads those scores back from now on
        _, challenger = timed_run(Path(tmp) / "workdir", "--set", "seed=2")
        predict_s, predicted = timed_predict(Path(tmp))
        second_path = reevaluate(Path(tmp) / "workdir", cold["model"]["version"])
    test = cold["metrics"]["test"]
    rows = [["cold (fresh workdir)", f"{cold_s:.0f}", f"{test['accuracy']:.3f}", f"{test['macro_f1']:.3f}",
             test["n"]],
            ["warm (same workdir)", f"{warm_s:.0f}", f"{warm['metrics']['test']['accuracy']:.3f}",
             f"{warm['metrics']['test']['macro_f1']:.3f}", warm["metrics"]["test"]["n"]],
            ["warm again (unchanged)", f"{again_s:.0f}", f"{again['metrics']['test']['accuracy']:.3f}",
             f"{again['metrics']['test']['macro_f1']:.3f}", again["metrics"]["test"]["n"]]]
    stages = [[name, cold["stages"][name]["state"], f"{cold['stages'][name]['seconds']:.1f}",
               warm["stages"][name]["state"], f"{warm['stages'][name]['seconds']:.1f}",
               again["stages"][name]["state"], f"{again['stages'][name]['seconds']:.1f}"]
              for name in sorted(cold["stages"], key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))]
    body = (
        "`python -m flows.retrain --set data.conflicts=drop` on the bundled Financial PhraseBank "
        f"(train.unfreeze_top={cold['config']['train']['unfreeze_top']}, augment.n_aug="
        f"{cold['config']['augment']['n_aug']}), set-up excluded.\n\n"
        + table(["run", "wall s", "test accuracy", "test macro-F1", "test n"], rows)
        + f"\n\nWarm / cold wall time: {warm_s / cold_s:.2f}; warm again / cold: {again_s / cold_s:.2f} (its gate read "
          f"the champion's scores back: {again['gate'].get('champion_scored_on')!r}). The warm run's gate against its "
          "identical champion: "
          f"difference {warm['gate']['difference']}, decision {warm['gate']['decision']!r}.\n\n"
          f"Second path: `registry reevaluate` of the cold run's model (the whole saved model on the recorded test "
          f"texts) gives accuracy {second_path['new']['accuracy']:.4f} / macro-F1 {second_path['new']['macro_f1']:.4f} "
          f"against evaluate's {second_path['recorded']['accuracy']:.4f} / {second_path['recorded']['macro_f1']:.4f} "
          f"({second_path['changed_predictions']} of {second_path['n']} predictions differ).\n\n"
        + table(["stage", "cold state", "cold s", "warm state", "warm s", "again state", "again s"], stages)
    )
    gates = [[name, summary["gate"]["decision"],
              summary["gate"]["champion_version"] or "majority-class predictor",
              _f(summary["gate"]["difference"]), "[" + ", ".join(_f(x) for x in summary["gate"]["interval"] or []) + "]",
              "-" if summary["gate"]["mcnemar_p"] is None else f"{summary['gate']['mcnemar_p']:.3f}"] for name, summary in (("cold run (vs no champion)", cold),
                                                                         ("seed 2 challenger (vs cold's model)", challenger))]
    body += (
        "\n\nThe gate (macro-F1 difference challenger - reference, one-sided "
        f"{cold['gate']['confidence']:.0%} paired-bootstrap interval):\n\n"
        + table(["run", "decision", "compared with", "difference", "interval", "McNemar p"], gates)
        + f"\n\nBatch prediction (`python -m flows.predict`, champion, process start included): {predicted:,} "
        f"sentences in {predict_s:.1f} s, {predicted / predict_s:.0f} sentences/s."
    )
    write_section("make_run", body)


def _f(value) -> str:
    return "-" if value is None else f"{value:+.3f}" if abs(value) < 1 else f"{value:.3f}"


def reevaluate(workdir: Path, version: str) -> dict:
    """`python -m flows.registry reevaluate VERSION`: the second scoring path; returns its log entry."""
    import json

    result = subprocess.run([sys.executable, "-m", "flows.registry", "reevaluate", version, "--workdir", str(workdir)],
                            cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"reevaluate failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def timed_predict(tmp: Path) -> tuple[float, int]:
    """Score the bundled file with the champion of `tmp/workdir`; returns seconds and rows scored."""
    import pyarrow.parquet as pq

    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "flows.predict", "--data", str(BUNDLED), "--out",
                             str(tmp / "scored.parquet"), "--workdir", str(tmp / "workdir")], cwd=ROOT,
                            capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"predict failed:\n{result.stderr[-3000:]}")
    return seconds, pq.read_metadata(tmp / "scored.parquet").num_rows


if __name__ == "__main__":
    main()
