"""Wall time of `make run`'s flow, cold (fresh workdir) and warm (same workdir again), and its test quality.

Set-up is excluded (it is timed in the closing notes); the command is exactly what `make run` runs after it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import table, write_section

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("validate", "split", "augment", "tokenize", "embed", "finetune", "evaluate", "promote")


def timed_run(workdir: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "flows.retrain", "--set", "data.conflicts=drop",
                             "--workdir", str(workdir)], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"make run failed:\n{result.stderr[-3000:]}")
    return seconds, json.loads(Path(result.stdout.strip().splitlines()[-1]).read_text())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cold_s, cold = timed_run(Path(tmp) / "workdir")
        warm_s, warm = timed_run(Path(tmp) / "workdir")
    test = cold["metrics"]["test"]
    rows = [["cold (fresh workdir)", f"{cold_s:.0f}", f"{test['accuracy']:.3f}", f"{test['macro_f1']:.3f}",
             test["n"]],
            ["warm (same workdir)", f"{warm_s:.0f}", f"{warm['metrics']['test']['accuracy']:.3f}",
             f"{warm['metrics']['test']['macro_f1']:.3f}", warm["metrics"]["test"]["n"]]]
    stages = [[name, cold["stages"][name]["state"], f"{cold['stages'][name]['seconds']:.1f}",
               warm["stages"][name]["state"], f"{warm['stages'][name]['seconds']:.1f}"]
              for name in sorted(cold["stages"], key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))]
    body = (
        "`python -m flows.retrain --set data.conflicts=drop` on the bundled Financial PhraseBank "
        f"(train.unfreeze_top={cold['config']['train']['unfreeze_top']}, augment.n_aug="
        f"{cold['config']['augment']['n_aug']}), set-up excluded.\n\n"
        + table(["run", "wall s", "test accuracy", "test macro-F1", "test n"], rows)
        + f"\n\nWarm / cold wall time: {warm_s / cold_s:.2f}\n\n"
        + table(["stage", "cold state", "cold s", "warm state", "warm s"], stages)
    )
    write_section("make_run", body)


if __name__ == "__main__":
    main()
