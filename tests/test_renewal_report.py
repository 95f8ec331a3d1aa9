"""What the renewal job tells its user: the HTML report (every repaired and skipped data row,
the sampled-review list, plots that draw even with no data), the progress it reports from the
start, and the data source it records so that workers rebuild the same customers."""

from __future__ import annotations

import asyncio
import csv
import html
from collections.abc import Sequence
from pathlib import Path

from typer.testing import CliRunner

from seamline.cli import app
from seamline.clock import VirtualClock
from seamline.store import open_store
from seamline.workloads.renewal import (
    CAMPAIGN_START,
    TELCO_COLUMNS,
    Customer,
    JobProgress,
    RenewalSummary,
    RowIssue,
    job_id,
    load_customers,
    run_renewals,
    synthetic_cohort,
)
from seamline.workloads.renewal._report import write_report
from seamline.workloads.renewal._worker import cohort_from

COHORT = synthetic_cohort(40, seed=11)


def write_csv(path: Path, customers: Sequence[Customer], *, blank_totals: int = 0) -> Path:
    """The customers in the published format; the first ``blank_totals`` get a blank
    TotalCharges (a declared repair), and one duplicate row is added (a skip)."""
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(TELCO_COLUMNS)
        blanks = 0
        for c in [*customers, customers[0]]:
            values = c.model_dump()
            row = []
            for column, field in zip(TELCO_COLUMNS, values, strict=True):
                value = values[field]
                if isinstance(value, bool):
                    value = (
                        ("1" if value else "0")
                        if column == "SeniorCitizen"
                        else ("Yes" if value else "No")
                    )
                row.append(str(value))
            if blanks < blank_totals:
                row[TELCO_COLUMNS.index("TotalCharges")] = " "
                blanks += 1
            out.writerow(row)
    return path


def run(url: str, customers: Sequence[Customer], **options: object) -> RenewalSummary:
    async def go() -> RenewalSummary:
        clock = VirtualClock(CAMPAIGN_START)
        store = open_store(url, clock=clock)
        try:
            return await run_renewals(store, customers, clock=clock, seed=7, **options)  # type: ignore[arg-type]
        finally:
            await store.close()

    return asyncio.run(go())


def test_the_report_lists_every_repaired_and_skipped_row(tmp_path: Path) -> None:
    """Each data issue has its own row in the report (line, customer, column, action, rule,
    problem), however many there are, not only a total."""
    issues = [
        RowIssue(line, f"{line:04d}-ABCDE", "TotalCharges", "blank", "repaired", "total.blank")
        for line in range(2, 40)
    ] + [RowIssue(41, None, None, "wrong field count", "skipped", "row.field_count")]
    page = write_report(
        RenewalSummary("j", 0), tmp_path / "r.html", title="t", notes=[], issues=issues
    ).read_text()
    assert "repaired and skipped rows (39)" in page
    for issue in issues:
        assert f"<td>{issue.line}</td>" in page
    assert page.count("<td>total.blank</td>") == 38 and "<td>(whole row)</td>" in page


def test_the_report_of_an_empty_job_draws_without_warnings(tmp_path: Path) -> None:
    """A job with nothing to plot yet still gets its four plots, and matplotlib warns about
    nothing (the test suite turns warnings into errors)."""
    page = write_report(RenewalSummary("j", 0), tmp_path / "r.html", title="t", notes=[])
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 4
    assert "No flagged offer was drawn for review." in text
    assert "nothing was repaired or skipped" in text


def test_the_summary_and_report_show_the_sampled_review_list(tmp_path: Path) -> None:
    """Offers above a warning line are counted; those drawn for sampled review are listed by
    customer in the report."""
    s = run(f"sqlite:///{tmp_path}/rv.db", synthetic_cohort(200, seed=3))
    assert s.review_flagged > len(s.reviews) > 0
    assert all(r.key in s.flagged for r in s.reviews)
    page = write_report(s, tmp_path / "r.html", title="t", notes=[]).read_text()
    assert f"Sampled review ({len(s.reviews):,} of {s.review_flagged:,} flagged offers)" in page
    for r in s.reviews:
        assert f"<td>{html.escape(r.customer)}</td>" in page


def test_progress_moves_from_the_start(tmp_path: Path) -> None:
    """The job reports the virtual campaign day as it goes: the bar moves long before the
    first window closes, and ends with every window closed on the campaign's last day."""
    seen: list[JobProgress] = []
    run(f"sqlite:///{tmp_path}/p.db", COHORT, on_progress=seen.append)
    before_first_close = [p for p in seen if p.closed == 0]
    assert len({p.day for p in before_first_close}) > 10
    assert seen[-1].closed == seen[-1].contracts == len(COHORT)
    assert seen[-1].day == seen[-1].days
    assert [p.day for p in seen] == sorted(p.day for p in seen)


def test_cli_records_the_data_file_so_workers_rebuild_the_same_customers(
    tmp_path: Path,
) -> None:
    """`renewals run --data PATH` records the file (and the limit) on the job, and a worker
    rebuilding the cohort from that record gets exactly the customers the run used; the CLI
    lists every data issue in the report."""
    data = write_csv(tmp_path / "telco.csv", synthetic_cohort(60, seed=4), blank_totals=2)
    loaded = load_customers(data)
    assert len(loaded.issues) == 3
    url = f"sqlite:///{tmp_path}/d.db"
    result = CliRunner().invoke(
        app,
        [
            "renewals",
            "run",
            "--data",
            str(data),
            "--limit",
            "12",
            "--store",
            url,
            "--report",
            str(tmp_path / "r.html"),
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    customers = loaded.customers[:12]

    async def world() -> dict[str, object]:
        store = open_store(url)
        try:
            row = await store.get_row(f"{job_id(customers, 7)}:world")
            assert row is not None
            return dict(row.data)
        finally:
            await store.close()

    config = asyncio.run(world())
    assert config["source"] == {"data": str(data.resolve()), "limit": 12}
    assert cohort_from(config["source"], 7) == customers  # type: ignore[arg-type]
    page = (tmp_path / "r.html").read_text()
    for issue in loaded.issues:
        assert f"<td>{issue.line}</td><td>{issue.customer_id or ''}</td>" in page


def test_a_synthetic_job_records_its_cohort_size(tmp_path: Path) -> None:
    """Without --data the job records the synthetic cohort it ran, as before."""
    url = f"sqlite:///{tmp_path}/s.db"
    run(url, COHORT[:5])

    async def world() -> object:
        store = open_store(url)
        try:
            row = await store.get_row(f"{job_id(COHORT[:5], 7)}:world")
            return None if row is None else row.data["source"]
        finally:
            await store.close()

    assert asyncio.run(world()) == {"synthetic": 5}
