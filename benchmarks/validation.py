"""How long validation takes on the bundled data: the validate step alone, and `--validate-only` end to end."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import table, write_section

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    import flows  # noqa: F401
    from schemas.config import DataConfig
    from tasks.validate import validate

    times = []
    for _ in range(5):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            ref = validate(DataConfig(conflicts="drop"), Path(tmp))
            times.append(time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "flows.retrain", "--validate-only", "--set", "data.conflicts=drop",
                        "--workdir", tmp], cwd=ROOT, check=True, capture_output=True)
        cli = time.perf_counter() - started
    rows = [["validate step (read + pandera + duplicates + Parquet write), median of 5", f"{statistics.median(times):.2f}"],
            ["`python -m flows.retrain --validate-only` (process start, imports, validate, drift, split)", f"{cli:.1f}"]]
    write_section("validation", f"Bundled Financial PhraseBank: {ref.meta['rows_read']} rows read, "
                                f"{ref.meta['rows_used']} used.\n\n" + table(["what", "seconds"], rows))


if __name__ == "__main__":
    main()
