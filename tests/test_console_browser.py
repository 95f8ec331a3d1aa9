"""The console in a real browser: headless Debian Chromium driven by Playwright logs in,
opens a run, approves an escalation and sees its row move on, and uses the kill switch.

Screenshots go to a temporary folder, or to ``$SEAMLINE_SCREENSHOTS`` (the docs' pictures
are made with ``SEAMLINE_SCREENSHOTS=docs/img``)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn

from seamline.clock import VirtualClock
from seamline.console import create_app
from seamline.store import open_store
from seamline.workloads.renewal import synthetic_cohort
from seamline.workloads.renewal._job import build_agent, runner_for
from tests._console_setup import PASSWORD, PausedJob, an_escalation, console_config, paused_renewals
from tests.conftest import T0

CHROMIUM = Path("/usr/bin/chromium")
T = TypeVar("T")
pytestmark = pytest.mark.slow


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)")
        pytest.skip("no /usr/bin/chromium: apt-get install chromium")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def console_url(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A console server on a renewal store paused at escalations; (base URL, store URL)."""
    url = f"sqlite:///{tmp_path / 'console.db'}"

    async def prepare() -> None:
        store = open_store(url)
        try:
            await paused_renewals(store, VirtualClock(T0))
        finally:
            await store.close()

    asyncio.run(prepare())
    port = _free_port()
    app = create_app(console_config(), store_url=url)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the console did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", url
    server.should_exit = True
    thread.join(timeout=10)


def _run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on its own loop in another thread: Playwright's sync API keeps a
    loop running on this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def _step_row_on(url: str, row_id: str) -> str:
    """Run the job's due timers (in a fresh process's way: a new runner) until the row
    leaves needs_person; its new state."""

    async def go() -> str:
        store = open_store(url)
        try:
            clock = VirtualClock(T0)
            customers = synthetic_cohort(40, seed=7)
            agent = build_agent(store, customers, clock=clock, seed=7)
            runner = runner_for(store, agent, clock=clock, owner="browser-test", concurrency=8)
            return await PausedJob(runner, clock, store).step_until_moved(row_id, "needs_person")
        finally:
            await store.close()

    return _run(go)


def _escalation(url: str) -> tuple[str, str]:
    async def go() -> tuple[str, str]:
        store = open_store(url)
        try:
            approval, row_id = await an_escalation(store)
            return approval.id, row_id
        finally:
            await store.close()

    return _run(go)


def _kills(url: str) -> list[str]:
    async def go() -> list[str]:
        store = open_store(url)
        try:
            return [k[0] for k in await store.kills()]
        finally:
            await store.close()

    return _run(go)


def test_operator_session_in_chromium(
    chromium: Path, console_url: tuple[str, str], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, store_url = console_url
    shots = Path(os.environ.get("SEAMLINE_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    approval_id, row_id = _escalation(store_url)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True)
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        try:
            # log in (a wrong password first)
            page.goto(f"{base}/runs")
            expect(page.get_by_role("heading", name="Log in")).to_be_visible()
            page.get_by_label("User name").fill("alice")
            page.get_by_label("Password").fill("wrong password")
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("alert")).to_contain_text("Wrong user name or password")
            page.get_by_label("User name").fill("alice")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Runs")).to_be_visible()
            page.goto(f"{base}/")
            expect(page.get_by_text("runs ended in the")).to_be_visible()
            page.screenshot(path=str(shots / "console-overview.png"), full_page=True)

            # open a run: its attempt history is there
            page.goto(f"{base}/runs?status=escalated")
            page.locator("table.runs a").first.click()
            expect(page.locator("#run-status")).to_have_text("escalated")
            expect(page.get_by_role("heading", name="Attempt history")).to_be_visible()
            page.screenshot(path=str(shots / "console-run.png"), full_page=True)

            # approve the escalation
            page.goto(f"{base}/approvals")
            page.get_by_role("link", name=approval_id).click()
            expect(page.get_by_role("heading", name="What the agent tried")).to_be_visible()
            page.screenshot(path=str(shots / "console-approval.png"), full_page=True)
            page.get_by_label("Reason").fill("the proposal is within policy")
            page.get_by_role("button", name="Approve", exact=True).click()
            expect(page.locator("#approval-status")).to_have_text("approved")

            # the worker picks the decision up and the row moves on
            page.goto(f"{base}/rows/{row_id}")
            expect(page.locator("#row-state")).to_have_text("needs_person")
            assert _step_row_on(store_url, row_id) == "offer_ready"
            page.reload()
            expect(page.locator("#row-state")).to_have_text("offer_ready")
            page.screenshot(path=str(shots / "console-row.png"), full_page=True)

            # the kill switch
            page.goto(f"{base}/controls")
            page.get_by_label("Scope").fill("kind:renewal")
            page.locator("form.kill").get_by_label("Reason").fill("offers look wrong")
            page.get_by_role("button", name="Stop").click()
            expect(page.get_by_role("cell", name="offers look wrong")).to_be_visible()
            page.screenshot(path=str(shots / "console-controls.png"), full_page=True)
            assert _kills(store_url) == ["kind:renewal"]

            for name, path in (("charts", "/charts"), ("method", "/method?kind=renewal")):
                page.goto(f"{base}{path}")
                page.screenshot(path=str(shots / f"console-{name}.png"), full_page=True)
        finally:
            browser.close()
    assert (shots / "console-row.png").stat().st_size > 10_000
