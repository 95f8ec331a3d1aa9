"""The method as tools: pattern selection to an ADR, failure diagnostics, replay,
reliability decomposition and evaluation."""

from seamline.method._adr import Adr, AdrAnswers, decide, load_answers, render, render_reasoning
from seamline.method._diagnose import (
    CATALOG,
    DiagnosisReport,
    Finding,
    Signature,
    Thresholds,
    diagnose,
    render_markdown,
    render_table,
)
from seamline.method._replay import (
    RecoveryReport,
    RederivationReport,
    ReplayInput,
    recommend,
    recovery_replay,
    rederive,
    renewal_inputs,
)
from seamline.method._scaffold import scaffold

__all__ = [
    "Adr",
    "AdrAnswers",
    "CATALOG",
    "DiagnosisReport",
    "Finding",
    "RecoveryReport",
    "RederivationReport",
    "ReplayInput",
    "Signature",
    "Thresholds",
    "decide",
    "diagnose",
    "load_answers",
    "recommend",
    "recovery_replay",
    "rederive",
    "render",
    "render_markdown",
    "render_reasoning",
    "render_table",
    "renewal_inputs",
    "scaffold",
]
