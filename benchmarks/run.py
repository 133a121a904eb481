"""`make bench` runs every benchmark in this folder; `make bench B=name` runs benchmarks/name.py only."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Not benchmarks: mpnet_reference writes a fixture and peers runs SetFit (both in .venv-peers: `make bench-peers`);
# wordnet_tasks writes data files.
NOT_BENCHMARKS = {"run", "results", "__init__", "mpnet_reference", "peers", "wordnet_tasks"}


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in HERE.glob("*.py") if p.stem not in NOT_BENCHMARKS)
    for name in names:
        script = HERE / f"{name}.py"
        if not script.is_file() or name in NOT_BENCHMARKS:
            print(f"no benchmark named {name!r}; available: "
                  f"{', '.join(sorted(p.stem for p in HERE.glob('*.py') if p.stem not in NOT_BENCHMARKS))}",
                  file=sys.stderr)
            return 2
        print(f"== benchmark {name}", file=sys.stderr)
        sys.path.insert(0, str(HERE.parent))
        # Each benchmark parses its own command line: it gets none (its defaults, and the environment variables
        # its --help names), not `run.py`'s list of names, which its parser would refuse.
        sys.argv = [str(script)]
        runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
