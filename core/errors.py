"""Typed errors raised by the steps. Only the command line turns them into exit codes and messages."""

from __future__ import annotations

from dataclasses import asdict, dataclass


class PipelineError(Exception):
    """Base of the errors a user can act on; never retried, never shown with a traceback."""


class InputNotFound(PipelineError):
    """The input file does not exist or cannot be opened (exit 66)."""


@dataclass(frozen=True)
class Failure:
    """One broken rule: `location` is `line N` (CSV, TSV, JSON lines), `row N` (Parquet) or `file`."""

    file: str
    location: str
    column: str
    rule: str
    value: str = ""

    def describe(self) -> str:
        """One line for a person: where, which column, which rule, and the offending value."""
        shown = f" (value: {self.value})" if self.value else ""
        column = f", column {self.column!r}" if self.column else ""
        return f"{self.file}: {self.location}{column}: {self.rule}{shown}"

    def as_row(self) -> dict[str, str]:
        """The failure as a flat dict, for the failure table."""
        return asdict(self)


class InvalidData(PipelineError):
    """The input data breaks one or more rules (exit 65). Carries every failure found, not just the first."""

    def __init__(self, failures: list[Failure]):
        self.failures = failures
        first = failures[0].describe() if failures else "invalid data"
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        super().__init__(first + more)


class StageFailed(Exception):
    """A step failed for a reason other than bad input; names the stage for the operator."""

    def __init__(self, stage: str, cause: BaseException):
        self.stage = stage
        self.cause = cause
        super().__init__(f"stage {stage!r} failed: {type(cause).__name__}: {cause}")
