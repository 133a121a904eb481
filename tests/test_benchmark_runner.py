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


def test_the_command_a_peers_section_prints_trains_exactly_the_recorded_runs():
    from benchmarks.peers import parse_run_order, run_order

    for pairs in ([("8pc", 1), ("8pc", 2), ("8pc", 3), ("16pc", 1), ("16pc", 2), ("16pc", 3), ("32pc", 1)],
                  [("8pc", 1), ("8pc", 3), ("64pc", 2)]):
        runs = [{"size": size, "seed": seed} for size, seed in reversed(pairs)]
        assert sorted(parse_run_order(run_order(runs))) == sorted(pairs)
