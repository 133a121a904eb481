"""What the command lines share: `--set` parsing, exit codes, and turning typed errors into messages.

Exit codes (CONTRACT.md): 0 success, 2 bad command line, 65 invalid data (EX_DATAERR), 66 input missing or
unreadable (EX_NOINPUT), 1 anything else, with the failing stage named.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from schemas.config import ConfigError, RetrainConfig, known_keys, local_path, parse_assignment
from core.errors import InputNotFound, InvalidData, PipelineError, StageFailed
from core.text.readers import require_file

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_DATAERR, EXIT_NOINPUT = 0, 1, 2, 65, 66


def path_arg(value: str) -> Path:
    """argparse type of a path option: a local path or a `file://` URL (see `schemas.config.local_path`)."""
    try:
        return Path(local_path(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """Add the repeatable `--set KEY=VALUE` option, listing the known keys in its help."""
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting by dotted key (repeatable), e.g. --set train.max_epochs=5. "
                             f"Keys: {', '.join(known_keys())}")


def check_backbone_settings(cfg: RetrainConfig) -> None:
    """Check the settings the backbone bounds against its config.json alone (no weights read, no TensorFlow
    imported: milliseconds), so a command refuses them before anything starts: `model.backbone` itself (a BERT
    or MPNet preset folder, or an installed body's name), `train.unfreeze_top` and `train.fewshot_unfreeze_top`
    (at most its transformer blocks) and `tokenize.max_length` (at most its positions). Raises `ConfigError` naming every setting that does not fit, with its bound. (Here, not in
    schemas/config.py: the validate step imports that module, and its cache key must not depend on the backbone's
    libraries.)"""
    from core.model.backbone import architecture, preset_folder

    preset = preset_folder(cfg.model.backbone)  # a name or a folder; all-mpnet-base-v2 absent: run `make mpnet`
    shape = architecture(preset)  # ConfigError naming model.backbone if the folder is not a BERT or MPNet preset
    problems = []
    for key in ("unfreeze_top", "fewshot_unfreeze_top"):
        value = getattr(cfg.train, key)
        if value is not None and value > shape.blocks:
            problems.append(f"train.{key}={value}, but the backbone {preset} has {shape.blocks} transformer "
                            f"block{'s' * (shape.blocks != 1)}: set train.{key} between 0 and {shape.blocks}")
    if cfg.tokenize.max_length > shape.max_positions:
        problems.append(f"tokenize.max_length={cfg.tokenize.max_length}, but the backbone {preset} takes "
                        f"{shape.max_positions} positions: set tokenize.max_length to {shape.max_positions} "
                        "or less (0: chosen from the data)")
    if problems:
        raise ConfigError("; ".join(problems))


def setting_error(parser: argparse.ArgumentParser, message: str) -> None:
    """Exit 2 for a bad setting with one line on stderr (`prog: error: message (see --help)`): the cause and the
    fix, without argparse's usage block above it, which says nothing about a setting's value."""
    parser.exit(EXIT_USAGE, f"{parser.prog}: error: {message} (see --help)\n")


def overrides_from(parser: argparse.ArgumentParser, assignments: list[str]) -> dict[str, Any]:
    """`--set` assignments as the overrides dict the flow takes; a malformed one exits with code 2."""
    overrides = {}
    for text in assignments:
        try:
            key, value = parse_assignment(text)
        except ConfigError as exc:
            setting_error(parser, str(exc))
        overrides[key] = value
    return overrides


class HideExpectedTracebacks(logging.Filter):
    """Drops the traceback from log records about bad input: the user gets the message, not the stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _is_expected(record.exc_info[1]):
            record.exc_info = None
            record.exc_text = None
        return True


def restrict_set(overrides: dict[str, Any], allowed: tuple[str, ...], command: str,
                 kind: str = "data-reading") -> RetrainConfig:
    """The configuration `overrides` build, after checking that `python -m flows.<command>` takes each key
    (`allowed`); raises `ConfigError` naming the others, or a bad value (the caller exits 2 with it)."""
    if unknown := sorted(set(overrides) - set(allowed)):
        raise ConfigError(f"--set {', '.join(unknown)} is not a {kind} setting; flows.{command} takes "
                          f"--set with {', '.join(allowed)}")
    return RetrainConfig.from_parameters(overrides=overrides)


def run_command(command: str, data: Path | str, action: Callable[[], Any]) -> int:
    """The end of a file command's `main`: check `data` exists, run `action`, print the path it returns (the last
    line on stdout); returns the exit code, a failure turned into its message by `report`."""
    try:
        require_file(data)
        out = action()
    except Exception as exc:  # noqa: BLE001 (the command line's last line of defence: a message, an exit code)
        return report(exc, command=command)
    print(out)
    return EXIT_OK


def _is_expected(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, (PipelineError, ConfigError)):  # bad data or a bad setting: the message is the story
            return True
        exc = exc.__cause__ or (exc.cause if isinstance(exc, StageFailed) else None)
    return False


def quiet_expected_errors() -> None:
    """Install `HideExpectedTracebacks` on every handler of the root and Prefect loggers."""
    flt = HideExpectedTracebacks()
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "tasks", "core"):
        for handler in logging.getLogger(name).handlers:
            if flt not in handler.filters:
                handler.addFilter(flt)


# What a refused input leaves behind, by command: each command's own words, never another's.
NOTHING_DONE = {
    "retrain": "nothing was trained or promoted; fix the data (or the settings named above) and run again.",
    "embed": "nothing was embedded or written; fix the data (or the settings named above) and run again.",
    "predict": "nothing was scored or written; fix the data (or the settings named above) and run again, or keep "
               "the invalid rows in the output (empty prediction, a `reason` column) with --on-invalid keep.",
    "suggest": "nothing was written; rename the pool's column named above and run again.",
}
MAX_LINE = 400  # characters of one reported failure: the report stays readable whatever the values hold


def report(exc: BaseException, max_listed: int = 50, command: str = "retrain") -> int:
    """Print a clear message for `exc` on stderr and return the exit code it maps to.

    The invalid-data report lists at most `max_listed` failures, each cut to `MAX_LINE` characters, then
    counts the rest, so its size is bounded whatever the file; `command` picks the closing advice."""
    if isinstance(exc, StageFailed) and isinstance(exc.cause, PipelineError):
        exc = exc.cause
    if isinstance(exc, InvalidData):
        failures = exc.failures
        files = sorted({f.file for f in failures})
        print(f"error: invalid input data: {len(failures)} problem{'s' * (len(failures) != 1)} in "
              f"{', '.join(files)}", file=sys.stderr)
        for failure in failures[:max_listed]:
            line = failure.describe()
            print(f"  {line if len(line) <= MAX_LINE else line[:MAX_LINE] + ' ...'}", file=sys.stderr)
        if len(failures) > max_listed:
            print(f"  ... and {len(failures) - max_listed} more", file=sys.stderr)
        if getattr(exc, "table_path", None):
            print(f"  full table of failures: {exc.table_path}", file=sys.stderr)
        print(NOTHING_DONE.get(command, NOTHING_DONE["retrain"]), file=sys.stderr)
        return EXIT_DATAERR
    if isinstance(exc, InputNotFound):
        print(f"error: cannot read the input: {exc}", file=sys.stderr)
        return EXIT_NOINPUT
    if isinstance(exc, ConfigError):
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, PipelineError):
        stage = f" (stage {exc.stage!r})" if getattr(exc, "stage", None) else ""
        print(f"error{stage}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if isinstance(exc, StageFailed):
        cause = exc.cause
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            print(f"error: the disk is full: writing {cause.filename or 'a file'} failed in stage {exc.stage!r}; "
                  "free some space (`python -m flows.registry prune`) or point --workdir elsewhere, then run again",
                  file=sys.stderr)
        elif isinstance(cause, OSError) and cause.filename:
            print(f"error: the run failed in stage {exc.stage!r}: cannot write or read {cause.filename}: "
                  f"{cause.strerror}", file=sys.stderr)
        else:
            print(f"error: the run failed in stage {exc.stage!r}: {type(cause).__name__}: {cause}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"error: the run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return EXIT_FAILURE


def ensure_writable(workdir: Path) -> None:
    """Create `workdir` if needed and prove it can be written; raises `WorkdirNotWritable` naming the path."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise WorkdirNotWritable(f"the workdir {workdir.resolve()} cannot be written ({exc.strerror or exc}); "
                                 "choose another with --workdir") from None


class WorkdirNotWritable(PipelineError):
    """The workdir cannot be created or written."""
