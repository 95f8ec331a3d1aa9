"""``seamline replay``: recovery replay and re-derivation over a recorded job in a store: the
renewal agent (P5 spine) or the billing scanner (P3 spine)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from seamline._cli_common import SeedOption, StoreOption, command_errors, open_existing_store
from seamline.errors import ConfigError
from seamline.store import DEFAULT_STORE_URL, Store, open_store

__all__ = ["replay_app"]

_out = Console()

replay_app = typer.Typer(
    help="Replay a recorded job: recover (reproduce it from its record, exactly) or rederive "
    "(run its inputs through another model version and hold changed decisions for review). "
    "--workload renewal (default) finds the job by the same --data/--limit/--seed as "
    "`renewals run`; --workload billing takes the job from --job or the store's only one.",
    no_args_is_help=True,
)

WORKLOAD_SPINE: dict[str, Literal["P3", "P5"]] = {"renewal": "P5", "billing": "P3"}
"""Each replayable workload's state spine, as its ADR decides it (a test checks they agree)."""
WorkloadOption = Annotated[
    str, typer.Option(help="Which workload's job: renewal (P5 spine) or billing (P3 spine).")
]
JobOption = Annotated[
    str | None,
    typer.Option(help="Billing only: the job id (default: the only billing job in the store)."),
]

DataOption = Annotated[
    Path | None,
    typer.Option(help="The Telco CSV the job ran on; without it, the synthetic cohort."),
]
LimitOption = Annotated[int | None, typer.Option(min=1, help="The --limit the job ran with.")]
DECISION_FIELDS = ("churn_risk", "plan", "term_months", "discount", "monthly_price")
BILLING_DECISION_FIELDS = ("amount", "reason_code")


def _cohort(data: Path | None, limit: int | None, seed: int) -> Sequence[Any]:
    from seamline.workloads.renewal._data import load_customers, synthetic_cohort

    customers = (
        load_customers(data).customers
        if data is not None
        else synthetic_cohort(limit or 7043, seed=seed)
    )
    return customers[:limit] if limit is not None else customers


async def _setup(
    store: Store,
    workload: str,
    data: Path | None,
    limit: int | None,
    seed: int,
    job: str | None,
) -> Any:
    if workload == "billing":
        return await _billing_setup(store, job)
    if job is not None:
        raise ConfigError("--job is for --workload billing; a renewal job is found by its cohort")
    from seamline.method._replay import renewal_inputs
    from seamline.workloads.renewal._job import job_id

    customers = _cohort(data, limit, seed)
    inputs = await renewal_inputs(store, customers, seed=seed)
    if not inputs:
        raise ConfigError(
            f"no recorded assessments of renewal job {job_id(customers, seed)} in the store; "
            "run `seamline renewals run` with the same --store, --data, --limit and --seed first"
        )
    return job_id(customers, seed), inputs


async def _billing_setup(store: Store, job: str | None) -> Any:
    from seamline.method._replay_billing import billing_inputs, billing_jobs

    if job is None:
        jobs = await billing_jobs(store)
        if len(jobs) != 1:
            raise ConfigError(
                "no billing job in the store; run `seamline billing run` with this --store first"
                if not jobs
                else f"the store holds {len(jobs)} billing jobs; choose one with --job: "
                + ", ".join(jobs)
            )
        job = jobs[0]
    inputs = await billing_inputs(store, job)
    if not inputs:
        raise ConfigError(f"billing job {job} has no recorded credit decisions to replay")
    return job, inputs


def _workload(name: str) -> str:
    if name not in WORKLOAD_SPINE:
        raise ConfigError(f"--workload must be one of {', '.join(WORKLOAD_SPINE)}; got {name!r}")
    return name


def _boundary(workload: str = "renewal") -> Any:
    # The model given here is replaced on a copy by the recorded or the new one.
    if workload == "billing":
        from seamline.method._replay_billing import billing_boundary
        from seamline.workloads.billing._credit import simulated_credit_model

        return billing_boundary(simulated_credit_model())
    from seamline.workloads.renewal._job import CAMPAIGN_START
    from seamline.workloads.renewal._offer import PolicyBook, SimulatedRenewalModel, offer_boundary

    return offer_boundary(SimulatedRenewalModel("typical-v1"), PolicyBook(CAMPAIGN_START))


def _new_model(workload: str, profile: str, seed: int) -> Any:
    from seamline.clock import VirtualClock

    if workload == "billing":
        from seamline.workloads.billing._credit import simulated_credit_model
        from seamline.workloads.billing._generate import BILLING_START

        return simulated_credit_model(profile, seed=seed, clock=VirtualClock(BILLING_START))
    from seamline.workloads.renewal._job import CAMPAIGN_START
    from seamline.workloads.renewal._offer import SimulatedRenewalModel

    return SimulatedRenewalModel(profile, seed=seed, clock=VirtualClock(CAMPAIGN_START))


@replay_app.command("recover")
def recover(
    store: StoreOption = DEFAULT_STORE_URL,
    workload: WorkloadOption = "renewal",
    data: DataOption = None,
    limit: LimitOption = None,
    seed: SeedOption = 7,
    job_id: JobOption = None,
) -> None:
    """Recovery replay: re-run every recorded boundary instance of a job (renewal
    assessments, or billing credit decisions) from its recorded model outputs into a scratch
    store and check it matches the record exactly."""
    from seamline.method._replay import recovery_replay

    async def go() -> int:
        original = open_existing_store(store)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                scratch = open_store(f"sqlite:///{tmp}/scratch.db")
                try:
                    job, inputs = await _setup(original, workload, data, limit, seed, job_id)
                    boundary = _boundary(workload)
                    report = await recovery_replay(original, boundary, inputs, scratch=scratch)
                finally:
                    await scratch.close()
        finally:
            await original.close()
        _out.print(f"recovery replay of job {job}, boundary {report.boundary}")
        _out.print("model outputs: RECORDED (no model is called)")
        _out.print(f"instances: {report.instances}  reproduced exactly: {report.reproduced}")
        for m in report.mismatches[:20]:
            _out.print(
                f"  MISMATCH {escape(m.key)} {m.what}: recorded {escape(m.recorded[:80])} "
                f"replayed {escape(m.replayed[:80])}",
                highlight=False,
            )
        for key in report.not_recorded[:20]:
            _out.print(f"  NOT RECORDED {escape(key)}", highlight=False)
        _out.print("result: EXACT" if report.exact else "result: DIVERGED")
        return 0 if report.exact else 1

    with command_errors():
        _workload(workload)
        code = asyncio.run(go())
    raise typer.Exit(code)


@replay_app.command("rederive")
def rederive_command(
    store: StoreOption = DEFAULT_STORE_URL,
    workload: WorkloadOption = "renewal",
    profile: Annotated[
        str, typer.Option(help="The simulated profile to re-derive with.")
    ] = "typical-v2",
    data: DataOption = None,
    limit: LimitOption = None,
    seed: SeedOption = 7,
    job_id: JobOption = None,
    spine: Annotated[
        str | None,
        typer.Option(
            help="Override the workload's state spine, P3 or P5 (default: its ADR's — "
            "renewal P5, billing P3)."
        ),
    ] = None,
    threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Decision divergence that advises P3 → P5.")
    ] = 0.10,
    queue: Annotated[
        bool, typer.Option(help="Open a review item for every changed decision.")
    ] = True,
) -> None:
    """Re-derivation: run the job's recorded inputs through another (simulated) model version
    into a scratch store, diff against the original, and queue changed decisions for review.
    The original history is not changed. On a P3-spined workload (billing) a divergence above
    --threshold advises moving the spine to P5."""
    from seamline.method._replay import rederive

    if spine not in (None, "P3", "P5"):
        raise typer.BadParameter(f"--spine must be P3 or P5, got {spine!r}")
    chosen: Literal["P3", "P5"] = (
        "P3" if spine == "P3" else "P5" if spine == "P5" else WORKLOAD_SPINE.get(workload, "P5")
    )

    async def go() -> None:
        original = open_existing_store(store)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                scratch = open_store(f"sqlite:///{tmp}/scratch.db")
                try:
                    job, inputs = await _setup(original, workload, data, limit, seed, job_id)
                    model = _new_model(workload, profile, seed)
                    report = await rederive(
                        original,
                        _boundary(workload),
                        inputs,
                        model=model,
                        scratch=scratch,
                        review_run=f"{job}:{profile}",
                        spine=chosen,
                        threshold=threshold,
                        decision_fields=BILLING_DECISION_FIELDS
                        if workload == "billing"
                        else DECISION_FIELDS,
                        queue=queue,
                    )
                finally:
                    await scratch.close()
        finally:
            await original.close()
        _print(job, report)

    with command_errors():
        _workload(workload)
        asyncio.run(go())


def _print(job: str, report: Any) -> None:
    label = "SIMULATED" if report.simulated else "real"
    _out.print(f"re-derivation of job {job}, boundary {report.boundary}", highlight=False)
    _out.print(
        f"models ({label}): {', '.join(report.original_models)} → {report.new_model}",
        highlight=False,
    )
    _out.print(f"instances compared: {report.instances}", highlight=False)
    _out.print(f"proposals changed: {report.proposals_changed}", highlight=False)
    _out.print(f"verdicts changed: {report.verdicts_changed}", highlight=False)
    _out.print(
        f"decisions changed: {report.decisions_changed} ({report.divergence_rate:.1%} "
        f"divergence for boundary {report.boundary})",
        highlight=False,
    )
    table = Table(
        title=f"divergence per field ({label})",
        caption="compared: instances accepted both times",
    )
    table.add_column("field")
    table.add_column("compared", justify="right")
    table.add_column("changed", justify="right")
    table.add_column("rate", justify="right")
    for f in report.fields:
        table.add_row(f.field, str(f.compared), str(f.changed), f"{f.rate:.1%}")
    _out.print(table)
    if report.changed:
        changes = Table(
            title=f"changed decisions ({label})",
            caption="held for review; the original history is unchanged",
        )
        changes.add_column("instance")
        changes.add_column("was")
        changes.add_column("now")
        changes.add_column("what changed")
        for c in report.changed:
            changes.add_row(
                escape(c.key.rsplit(":", 2)[-2] + ":" + c.key.rsplit(":", 1)[-1]),
                c.original,
                c.new,
                escape("; ".join(c.changes)),
            )
        _out.print(changes)
    queued = sum(c.review_id is not None for c in report.changed)
    _out.print(f"review items: {queued} (pending escalations review:{job}:…)", highlight=False)
    if report.recommendation is not None:
        r = report.recommendation
        _out.print(f"RECOMMENDATION {r.move}: {r.reason}", highlight=False)
    else:
        _out.print(
            f"no spine move advised (spine {report.spine}, divergence "
            f"{report.divergence_rate:.1%}, threshold {report.threshold:.1%})",
            highlight=False,
        )
