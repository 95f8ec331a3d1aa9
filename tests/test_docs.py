"""The README's code runs, and its test command is the one CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_readme_python_examples_run(tmp_path: Path) -> None:
    """Every python block in the README runs to completion in a fresh interpreter."""
    blocks = _blocks("python")
    assert blocks, "the README should carry at least one runnable example"
    for n, code in enumerate(blocks):
        script = tmp_path / f"readme_{n}.py"
        script.write_text(code, encoding="utf-8")
        done = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"README block {n} failed:\n{done.stderr}"
        assert done.stdout.splitlines() == _expected_output(code), f"README block {n}"


def _expected_output(code: str) -> list[str]:
    """What a block says it prints: the comment after each print(), on its line or the next."""
    lines = code.splitlines()
    expected = []
    for i, line in enumerate(lines):
        if "print(" not in line:
            continue
        if "  # " in line:
            expected.append(line.split("  # ", 1)[1])
        elif i + 1 < len(lines) and lines[i + 1].strip().startswith("# "):
            expected.append(lines[i + 1].strip()[2:])
    return expected


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    """The README's set-up section has two commands; .ci/run runs the second verbatim."""
    setup = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, flags=re.DOTALL)
    assert len(commands) == 2
    run_main, run_tests = commands
    assert "seamline renewals run" in run_main
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert run_tests in ci.splitlines()
