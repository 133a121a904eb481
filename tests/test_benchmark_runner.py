"""`make bench B=name` (benchmarks/run.py) runs a benchmark as its own command would: with its own defaults."""

import sys


def test_a_benchmark_run_by_name_parses_an_empty_command_line(tmp_path, monkeypatch):
    """Every benchmark with an argparse parser was refused by its parser when run through `make bench B=name`
    (it saw run.py's own arguments): the runner hands each benchmark an empty command line."""
    import benchmarks.run as runner

    (tmp_path / "probe.py").write_text(
        "import argparse, json, sys, pathlib\n"
        "parser = argparse.ArgumentParser()\n"
        "parser.add_argument('--sizes', default='8pc')\n"
        "args = parser.parse_args()\n"
        "pathlib.Path(__file__).with_name('seen.json').write_text(json.dumps([sys.argv[1:], args.sizes]))\n")
    monkeypatch.setattr(runner, "HERE", tmp_path)
    monkeypatch.setattr(sys, "argv", ["benchmarks/run.py", "probe"])
    assert runner.main(["probe"]) == 0
    assert (tmp_path / "seen.json").read_text() == '[[], "8pc"]'
    assert runner.main(["no_such_benchmark"]) == 2
