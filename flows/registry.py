"""The model registry's command line: list, show, promote, roll back, prune.

    .venv/bin/python -m flows.registry list     [--workdir DIR] [--name NAME]
    .venv/bin/python -m flows.registry show     VERSION|champion [--workdir DIR] [--name NAME]
    .venv/bin/python -m flows.registry promote  VERSION [--reason TEXT] [--override-approval REASON] [--workdir DIR] [--name NAME]
    .venv/bin/python -m flows.registry rollback [--workdir DIR] [--name NAME]
    .venv/bin/python -m flows.registry prune    [--keep N] [--dry-run] [--workdir DIR]
    .venv/bin/python -m flows.registry reevaluate VERSION|champion [--data PATH] [--workdir DIR] [--name NAME]
    .venv/bin/python -m flows.registry approve  VERSION [--reviewer NAME] [--comment TEXT] [--workdir DIR] [--name NAME]
    .venv/bin/python -m flows.registry reject   VERSION [--reviewer NAME] [--comment TEXT] [--workdir DIR] [--name NAME]
    .venv/bin/python -m flows.registry export-serving --to DIR [--keep N] [--workdir DIR] [--name NAME]

`export-serving` writes the champion's SavedModel as `DIR/<name>/<N>/` (TF Serving's model base path: the next
number, atomically; the newest `--keep` kept). A retrain run with `--set serving.dir=DIR` does the same on every
change of champion from then on (promote, approve, rollback, here or in a run).

`approve` promotes the candidate a `gate.approval=manual` run left waiting (refused, with the reason, if the
OS account running it started that run, if it is no longer the latest candidate, its files changed since
registration, or the champion changed since its gate); `reject` withdraws it. The reviewer is the OS account
running the command (its uid, not $USER); `--reviewer` adds a name beside it. Both are recorded with the time
and the comment (`show` lists them). `promote` refuses a version awaiting approval (or rejected) unless
`--override-approval REASON`, which is recorded with the account.

`list` and `show` check every file of each version against the hashes recorded at registration and say so
(`list`: the `files` column; `show`: `integrity`).

Pruning never removes a champion or the version before it; it also removes artifacts, cache records and
feature-cache entries that no kept version, and none of the last `--keep` runs, uses. The common options
(--workdir, --name) go before or after the sub-command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flows import cli
from core.storage import registry
from tasks import reevaluation
from tasks.prune import prune


def _table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain-text table (rich), never wrapped or cut: versions and run ids must stay copyable."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for row in rows:
        table.add_row(*map(str, row))
    console = Console(width=1000, no_color=True, highlight=False, force_terminal=False)
    with console.capture() as captured:
        console.print(table, crop=False)
    return "\n".join(line.rstrip() for line in captured.get().splitlines() if line.strip())


def _figure(value: float | None) -> str:
    """A test figure for the listing; a version trained in estimate mode has none (its metrics.json holds a
    cross-validated estimate instead)."""
    return "none (CV estimate)" if value is None else f"{value:.4f}"


def list_versions(workdir: Path, name: str) -> str:
    """A table of the versions of `name`: champion mark, test figures, data and run."""
    try:
        current = (registry.champion(workdir, name) or {}).get("version")
    except registry.RegistryError as exc:
        current, warning = None, f"warning: {exc}\n"
    else:
        warning = ""
    rows, damaged = [], []
    for v in registry.versions(workdir, name):
        found = registry.integrity(workdir, name, v["version"])
        if not found["verified"]:
            damaged.append(found["problem"])
        files = ("verified" if found["coverage"] == registry.HASH_COVERAGE else "verified (partly covered)") \
            if found["verified"] else "DAMAGED"
        rows.append(["*" if v["version"] == current else "", v["version"],
                     _figure(v["test"].get("accuracy", float("nan"))), _figure(v["test"].get("macro_f1", float("nan"))),
                     files, v["lineage"].get("dataset_sha256", "")[:12], v["lineage"].get("run_id", "")])
    if not rows:
        others = sorted(p.name for p in (Path(workdir) / "models").glob("*") if p.is_dir() and p.name != name)
        hint = f" (models there: {', '.join(others)}; choose one with --name)" if others else ""
        return warning + f"no versions of model {name!r} in {workdir}{hint}"
    notes = "".join(f"\nwarning: {problem}" for problem in damaged)
    return warning + _table(rows, ["champion", "version", "accuracy", "macro_f1", "files", "dataset", "run"]) + notes


def show(workdir: Path, name: str, version: str) -> dict:
    """Everything the registry knows about one version (`champion` for the current one)."""
    folder = registry.resolve_version(workdir, name, version, check=False)  # a damaged version is shown too
    version = folder.name
    card = json.loads((folder / "model.json").read_text())
    return {"version": version, "path": str(folder), "lineage": json.loads((folder / "lineage.json").read_text()),
            "metrics": json.loads((folder / "metrics.json").read_text()),
            "card": {k: v for k, v in card.items() if k != "history"},
            "reevaluated": reevaluation.latest(folder),
            "report": str((folder / "report.html").resolve()) if (folder / "report.html").is_file() else None,
            "integrity": registry.integrity(workdir, name, version),
            "approval": registry.approval_record(workdir, name, version),
            "reviews": registry.reviews(workdir, name, version)}


def review(workdir: Path, name: str, version: str, verdict: str, reviewer_name: str, comment: str) -> dict:
    """Approve or reject the candidate `version` as the OS account running this command (with `reviewer_name`
    beside it, if given); re-renders its report with the decision."""
    from core.reports import model_report
    from core.run.identity import os_account

    account = os_account()
    if verdict == "approve":
        result = {"approved": version, "champion": registry.approve(workdir, name, version, account, comment,
                                                                    reviewer_name=reviewer_name or "")}
    else:
        result = {"rejected": version, "review": registry.reject(workdir, name, version, account, comment,
                                                                 reviewer_name=reviewer_name or "")}
    try:
        result["report"] = str(model_report.write_report(workdir, name, version))
    except Exception as exc:  # noqa: BLE001 (the decision is recorded; a report that cannot be re-drawn is a warning)
        print(f"warning: the report of {version} was not updated: {exc}", file=sys.stderr)
    return result


def export_serving(workdir: Path, name: str, to: Path, keep: int = 3) -> dict:
    """Publish the champion of `name` to `to/<name>/<N>/` (core.storage.serving_export); returns what was written.
    Raises `RegistryError` without a champion, or if its files changed since registration."""
    from core.storage import serving_export

    if keep < 1:
        raise registry.RegistryError(f"--keep must be at least 1, got {keep}")
    with registry.locked(workdir, name):
        folder = registry.resolve_version(workdir, name, "champion")
        written = serving_export.publish(folder / registry.SAVED_MODEL, Path(to) / name, name, folder.name, keep)
    return {"champion": folder.name, "published": str(written.resolve()),
            "numbers": serving_export.numbers(Path(to) / name)}


def add_common_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every sub-command takes, before or after its name (`registry --workdir W list` and
    `registry list --workdir W` alike). A sub-command's copy has no defaults (SUPPRESS), so an option given
    before the sub-command is not reset by the sub-command's parser."""
    parser.add_argument("--workdir", type=cli.path_arg, default=Path("workdir") if defaults else argparse.SUPPRESS,
                        help="the retrain workdir holding the registry: a path or a file:// URL (default: ./workdir)")
    parser.add_argument("--name", default="default" if defaults else argparse.SUPPRESS,
                        help="model name (model.name), default: default")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.registry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the versions of a model")
    show_p = sub.add_parser("show", help="show one version (or `champion`)")
    show_p.add_argument("version")
    promote_p = sub.add_parser("promote", help="make a version the champion")
    promote_p.add_argument("version")
    promote_p.add_argument("--reason", default="promoted by hand")
    promote_p.add_argument("--override-approval", default="", metavar="REASON",
                           help="promote a version awaiting a reviewer's approval (or rejected) anyway; the reason "
                                "and your OS account are recorded in the review and promotion logs")
    sub.add_parser("rollback", help="make the previous champion the champion again")
    prune_p = sub.add_parser("prune", help="delete old versions and unused artifacts and cache entries")
    prune_p.add_argument("--keep", type=int, default=3, help="newest versions and runs to keep (default 3)")
    prune_p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    reevaluate_p = sub.add_parser("reevaluate", help="score a version again on its recorded test rows and log the "
                                                     "new metrics beside the recorded ones (nothing is overwritten)")
    reevaluate_p.add_argument("version", help="a version, or `champion`")
    reevaluate_p.add_argument("--data", type=cli.path_arg, default=None,
                              help="the data the version was trained on, for versions that did not record their "
                                   "test texts (default: the dataset path in its lineage)")
    for verdict, what in (("approve", "promote the candidate awaiting approval (gate.approval=manual)"),
                          ("reject", "reject the candidate awaiting approval; the champion stays")):
        review_p = sub.add_parser(verdict, help=what)
        review_p.add_argument("version")
        review_p.add_argument("--reviewer", default="", help="your name, recorded beside your OS account (which "
                                                             "is the reviewer's identity)")
        review_p.add_argument("--comment", default="", help="why, recorded with the decision")
    export_p = sub.add_parser("export-serving", help="write the champion's SavedModel as DIR/<name>/<N>/ for TF Serving")
    export_p.add_argument("--to", required=True, type=cli.path_arg, help="TF Serving's model directory (the base "
                                                                          "path's parent)")
    export_p.add_argument("--keep", type=int, default=3, help="numbered versions kept under DIR/<name> (default 3)")
    for command in sub.choices.values():  # every sub-command, including any added above this line
        add_common_options(command, defaults=False)
    args = parser.parse_args(argv)
    if not Path(args.workdir).is_dir():
        # nothing to list, show or change there: say so (a typo in --workdir must not look like an empty registry)
        print(f"error: the workdir {args.workdir} does not exist{' (it is a file)' if Path(args.workdir).exists() else ''}"
              f"; give the --workdir your runs used (retrain's --workdir, default ./workdir)", file=sys.stderr)
        return cli.EXIT_NOINPUT
    try:
        if args.command == "list":
            print(list_versions(args.workdir, args.name))
        elif args.command == "show":
            print(json.dumps(show(args.workdir, args.name, args.version), indent=2, default=str))
        elif args.command == "promote":
            print(json.dumps(registry.promote_by_hand(args.workdir, args.name, args.version, args.reason,
                                                      args.override_approval), indent=2))
        elif args.command == "rollback":
            print(json.dumps(registry.rollback(args.workdir, args.name), indent=2))
        elif args.command == "prune":
            print(json.dumps(prune(args.workdir, args.keep, args.dry_run), indent=2))
        elif args.command == "reevaluate":
            from tasks.reevaluation import reevaluate

            print(json.dumps(reevaluate(args.workdir, args.name, args.version, data=args.data), indent=2))
        elif args.command in ("approve", "reject"):
            print(json.dumps(review(args.workdir, args.name, args.version, args.command, args.reviewer, args.comment),
                             indent=2))
        elif args.command == "export-serving":
            print(json.dumps(export_serving(args.workdir, args.name, args.to, args.keep), indent=2))
    except registry.RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return cli.EXIT_FAILURE
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
