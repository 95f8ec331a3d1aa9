"""Every example under examples/ runs, and says what the docs say it shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").rglob("*.py"))

EXPECT = {
    "composed.py": [
        "P1  signals merged",
        "P6  discount 0.25 needs a person",
        "P4  gate allowed send_offer",
        "P2  saga completed",
        "P5  window closed: renewed",
        "saga_completed",
    ],
    "p3_events.py": [
        "second poll handled 0 events (offset kept)",
        "as of offset 2: [12.0, 14.5]",
        "fork at 3 (copied 3)",
    ],
    "p4_gate.py": [
        "offers 0.90: denied by the policy gate (discount.hard_cap)",
        "denied by the role gate",
        "offers 0.25: allowed",
        "supervisor: escalated after 3 restarts",
    ],
    "p5_state_machine.py": [
        "day 30: {'moved': 2, 'noop': 1}",
        "5575-GNVDE: expired v3",
        "timer_noop(expired)",
    ],
    "p6_human.py": [
        "['applied', 'applied', 'applied', 'throttled', 'throttled']",
        "SLA passed for disc-7590: fallback deny applied",
        "mallory: not_authorised",
        "a renewal commit after the kill: killed",
    ],
}


def test_examples_exist() -> None:
    """There is an example for every pattern."""
    names = {p.name for p in EXAMPLES}
    for stem in ("p1_", "p2_", "p3_", "p4_", "p5_", "p6_"):
        assert any(n.startswith(stem) for n in names), stem


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path: Path) -> None:
    """The example exits 0 and prints what it is there to show."""
    done = subprocess.run(
        [sys.executable, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for line in EXPECT.get(path.name, []):
        assert line in done.stdout, (line, done.stdout)
