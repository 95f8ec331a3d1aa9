"""Pattern selection: the five steps, the six-line ADR, and the workloads' records."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seamline.cli import app
from seamline.errors import ConfigError
from seamline.method import AdrAnswers, decide, load_answers, render

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ROOT / "examples" / "workloads"

EXPECTED = {
    # workload: (runtime class, spine, coordination, control) per the design brief
    "renewal": ("long-horizon", "P5", ("P1", "P2"), ("P4", "P6")),
    "support": ("conversational", "none", ("P1",), ("P4",)),
    "billing": ("autonomous", "P3", ("P2",), ("P4",)),
    "incidents": ("autonomous", "none", ("P1", "P2"), ("P4",)),
    "porting": ("long-horizon", "P5", ("P2",), ("P4", "P6")),
}


def _patterns(line: str) -> tuple[str, ...]:
    return tuple(sorted(set(re.findall(r"\bP\d\b", line))))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_workload_gets_the_patterns_the_method_prescribes(name: str) -> None:
    """Each workload's answers lead to the runtime class and patterns of the design brief."""
    adr = decide(load_answers(WORKLOADS / name / "adr.yaml"))
    runtime, spine, coordination, control = EXPECTED[name]
    assert adr.runtime_class == runtime
    assert adr.spine.split(" ")[0] == spine
    assert _patterns(adr.coordination) == coordination
    assert _patterns(adr.control) == control


def test_the_renewal_record_in_the_docs_is_what_the_command_prints() -> None:
    """docs/renewal.md holds exactly the six lines the command prints for its answers."""
    text = render(decide(load_answers(WORKLOADS / "renewal" / "adr.yaml")))
    assert text in (ROOT / "docs" / "renewal.md").read_text()


@pytest.mark.parametrize("name", ["support", "billing", "incidents", "porting"])
def test_each_workload_readme_carries_the_commands_record(name: str) -> None:
    """Each workload's README holds exactly the six lines `seamline adr` prints for it."""
    text = render(decide(load_answers(WORKLOADS / name / "adr.yaml")))
    assert text in (WORKLOADS / name / "README.md").read_text()


def _answers(**change: object) -> AdrAnswers:
    base = load_answers(WORKLOADS / "renewal" / "adr.yaml")
    return base.model_copy(update=change)


def test_p5_needs_all_three_predicates() -> None:
    """Without any one of the three P5 predicates the spine falls to P3 or none."""
    assert decide(_answers()).spine.startswith("P5")
    for missing in ("long_pauses_or_external_waits", "world_changes_during_pause"):
        assert decide(_answers(**{missing: False})).spine.startswith("none")
    assert decide(_answers(state_reconstructible_from_input=True)).spine.startswith("none")
    assert decide(
        _answers(state_reconstructible_from_input=True, log_is_the_truth=True)
    ).spine.startswith("P3")


def _statements(a: AdrAnswers) -> dict[str, bool]:
    """Every phrase a spine line may use, and whether it is true of the answers."""
    long, rebuildable = a.long_pauses_or_external_waits, a.state_reconstructible_from_input
    moving, log = a.world_changes_during_pause, a.log_is_the_truth
    return {
        "long pauses or waits on the outside world": long,
        "no long pauses or waits on the outside world": not long,
        "state not reconstructible from the original input": not rebuildable,
        "state reconstructible from the original input": rebuildable,
        "the world can change during a pause": moving,
        "the world cannot change during a pause": not moving,
        "the log must be the truth: replay and branching matter": log,
        "the log need not be the truth": not log,
    }


@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=4)))
def test_the_spine_line_names_only_true_predicates_that_decided_it(
    flags: tuple[bool, bool, bool, bool],
) -> None:
    """For every combination of the four spine predicates, the spine line's parenthesis is a
    list of true statements about the answers: all three P5 predicates for P5; the log and
    every failed P5 predicate for P3; every failed P5 predicate and the log's for none. The
    build sequence starts with the state schema and console whatever the spine."""
    long, rebuildable, moving, log = flags
    answers = _answers(
        work_unit="hours",
        long_pauses_or_external_waits=long,
        state_reconstructible_from_input=rebuildable,
        world_changes_during_pause=moving,
        log_is_the_truth=log,
    )
    adr = decide(answers)
    kind, _, rest = adr.spine.partition(" (")
    said = rest.removesuffix(")").split("; ")
    truth = _statements(answers)
    assert all(truth.get(s) for s in said), (adr.spine, said)
    failed_p5 = [
        s
        for s, ok in truth.items()
        if ok and s.startswith(("no long", "state reconstructible", "the world cannot"))
    ]
    if long and not rebuildable and moving:
        assert adr.spine.startswith("P5") and len(said) == 3
    elif log:
        assert kind == "P3 event log"
        assert said == ["the log must be the truth: replay and branching matter", *failed_p5]
    else:
        assert kind == "none"
        assert said == [*failed_p5, "the log need not be the truth"]
        assert any("caution" in r for r in adr.reasons["spine"])  # hours with no spine
    assert adr.build_sequence.split(" -> ")[0] == "state schema and console"


def test_runtime_class_follows_duration_and_a_changing_world() -> None:
    """Seconds are conversational; minutes autonomous unless the world moves; else long."""
    assert decide(_answers(work_unit="seconds")).runtime_class == "conversational"
    assert decide(_answers(work_unit="minutes")).runtime_class == "long-horizon"
    assert (
        decide(_answers(work_unit="minutes", world_changes_mid_run=False)).runtime_class
        == "autonomous"
    )


def test_no_side_effects_means_no_control_and_p6_is_built_last() -> None:
    """Without side effects there is no gate; with P6 the build ends with its four planes."""
    quiet = decide(
        _answers(
            side_effects=False,
            legal_or_financial_consequences=False,
            out_of_policy_cases=False,
            audit_needs=False,
        )
    )
    assert quiet.control == "none" and "gate" not in quiet.build_sequence
    full = decide(_answers())
    assert full.build_sequence.split(" -> ")[0] == "state schema and console"
    assert full.build_sequence.endswith("kill switch, escalation, approval, throttling")


def test_cli_reads_answers_and_writes_the_record(tmp_path: Path) -> None:
    """`seamline adr --answers` prints the six lines unwrapped, with reasons, and can write
    them."""
    out = tmp_path / "adr.md"
    result = CliRunner().invoke(
        app,
        ["adr", "--answers", str(WORKLOADS / "porting" / "adr.yaml"), "--out", str(out)],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    printed = result.output.splitlines()
    record = render(decide(load_answers(WORKLOADS / "porting" / "adr.yaml")))
    assert all(line in printed for line in record.splitlines())  # whole lines, never wrapped
    assert "## Reasoning" in out.read_text()


def test_cli_asks_the_questions_when_there_is_no_file() -> None:
    """Interactive use asks each step's questions and decides from the answers."""
    answers = (
        "\n".join(
            [
                "chat helper",
                "seconds",
                "n",
                "n",
                "y",
                "n",
                "n",
                "y",
                "n",
                "y",
                "n",
                "n",
                "n",
                "sim:typical-v1",
            ]
        )
        + "\n"
    )
    result = CliRunner().invoke(app, ["adr"], input=answers, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "1. Runtime class: conversational" in result.output
    assert "3. Coordination: P1 hierarchical delegation" in result.output


def test_bad_answers_are_explained(tmp_path: Path) -> None:
    """An answers file with an unknown duration names the field and the allowed values."""
    bad = tmp_path / "a.yaml"
    bad.write_text("name: x\nwork_unit: weeks\nmodel: m\ndate: 2026-11-21\n")
    with pytest.raises(ConfigError, match="work_unit"):
        load_answers(bad)
    result = CliRunner().invoke(app, ["adr", "--answers", str(bad)])
    assert result.exit_code == 2


def test_the_adr_page_shows_real_output() -> None:
    """docs/adr.md shows the porting answers and exactly what the command prints for them."""
    from seamline.method import render_reasoning

    page = (ROOT / "docs" / "adr.md").read_text()
    answers = (WORKLOADS / "porting" / "adr.yaml").read_text().strip()
    assert answers in page
    output = render_reasoning(decide(load_answers(WORKLOADS / "porting" / "adr.yaml")))
    assert output.rstrip() in page


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scaffold_runs_with_exactly_the_chosen_patterns(name: str, tmp_path: Path) -> None:
    """`seamline adr --scaffold DIR` writes a skeleton that runs and uses exactly the
    patterns the record chose."""
    import subprocess
    import sys

    target = tmp_path / "project"
    result = CliRunner().invoke(
        app,
        ["adr", "--answers", str(WORKLOADS / name / "adr.yaml"), "--scaffold", str(target)],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    done = subprocess.run(
        [sys.executable, str(target / "app.py")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    _, spine, coordination, control = EXPECTED[name]
    chosen = {spine, *coordination, *control} - {"none"}
    assert done.stdout.splitlines()[0] == "patterns: " + " + ".join(sorted(chosen))
    for pattern in chosen - {"P5"}:  # P5 shows as the instance closing
        assert pattern in done.stdout.split("\n", 1)[1]
    assert "2. Spine:" in (target / "README.md").read_text()


def test_scaffold_refuses_a_folder_in_use(tmp_path: Path) -> None:
    """Scaffolding into a non-empty folder is refused instead of overwriting anything."""
    (tmp_path / "keep.txt").write_text("mine")
    result = CliRunner().invoke(
        app,
        ["adr", "--answers", str(WORKLOADS / "support" / "adr.yaml"), "--scaffold", str(tmp_path)],
    )
    assert result.exit_code == 2
    assert (tmp_path / "keep.txt").read_text() == "mine"
