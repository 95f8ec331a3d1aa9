"""Metrics and alerts computed from the store: success, escalation, cost, latency, context
utilisation, rejects per verifier, gate denials per rule and tool errors per tool, for any
window and workflow kind; alerts on a drop in success or a rise in cost; Prometheus text.
"""

from __future__ import annotations

from seamline.metrics._alerts import (
    ALERT_STREAM,
    Alert,
    AlertName,
    AlertRules,
    evaluate_alerts,
    list_alerts,
)
from seamline.metrics._compute import (
    Metrics,
    RuleDenials,
    ToolErrors,
    VerifierRejects,
    compute_metrics,
    metrics_by_kind,
    parse_window,
)
from seamline.metrics._prometheus import (
    METRIC_NAMES,
    MetricsCollector,
    prometheus_text,
    render_prometheus,
)

__all__ = [
    "ALERT_STREAM",
    "METRIC_NAMES",
    "Alert",
    "AlertName",
    "AlertRules",
    "Metrics",
    "MetricsCollector",
    "RuleDenials",
    "ToolErrors",
    "VerifierRejects",
    "compute_metrics",
    "evaluate_alerts",
    "list_alerts",
    "metrics_by_kind",
    "parse_window",
    "prometheus_text",
    "render_prometheus",
]
