"""The records the last steps hand on: what the gate decided (`GateDecision`) and what promotion did
(`Release`); the review workflow and the flow read both."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class GateDecision(BaseModel):
    """What the gate decided and on what evidence."""

    promote: bool
    decision: Literal["promote", "keep champion"]
    reason: str
    test: str
    champion_version: str | None = None
    confidence: float
    n: int = 0
    challenger_macro_f1: float | None = None
    baseline_macro_f1: float | None = None
    difference: float | None = None
    lower_bound: float | None = None
    interval: list[float] | None = None
    mcnemar_p: float | None = None
    discordant: dict[str, int] | None = None
    champion_scored_on: str | None = None
    difference_histogram: dict[str, list[float]] | None = None  # the resampled differences (edges, counts), for the report
    standard_error: float | None = None  # of the macro-F1 difference, from the paired bootstrap
    promotion_threshold: float | None = None  # the observed gain needed to promote: the one-sided half-width
    detectable_difference: float | None = None  # the true gain promoted with probability `power` (see paired_bootstrap)
    power: float | None = None
    detectable_note: str | None = None
    estimate: dict[str, Any] | None = None  # estimate mode: the cross-validated figures the decision stood on


class Release(BaseModel):
    """What promotion did: the registered version, where it lives, and whether it became champion."""

    name: str
    version: str
    path: str
    promoted: bool
    reason: str
    awaiting_approval: bool = False
