"""A manager (carol, a viewer) follows the runs on the status page, in a real browser.

It runs after the runbook tests (file order), so the page shows their real runs: the screenshot
in the README comes from here.
"""

from opsbook.contract import wire
from opsbook.runsclient import RunsClient

from .hubclient import runs_client, sign_in_with_browser
from .stack import ROOT

SCREENSHOT = ROOT / "docs" / "screenshots" / "status-page.png"


def client_of(stack, name: str) -> RunsClient:
    return runs_client(stack, name, "status page test")


def a_run_in_progress(alice: RunsClient, bob: RunsClient) -> wire.Run:
    """A run as the API records it mid-way: batch 1 by alice, handed to bob, batch 2 by bob."""
    run = alice.create(
        wire.CreateRun(
            runbook="patching",
            stack="web",
            parameters={"approved": ["opsbook-demo-base=1.1"]},
        )
    )
    alice.start_batch(run.id, 1, ["web-1"])
    alice.append(
        run.id,
        [wire.EventIn(type="runner_on_ok", host="web-1", task=task, batch=1) for task in TASKS],
    )
    alice.finish_batch(run.id, 1, [wire.HostResult(host="web-1", state=wire.HostState.OK)])
    alice.gate(run.id, 1, wire.GateReport(passed=True, message="web-1: up, load, disk ok"))
    alice.handoff(run.id, "bob", "end of my shift: web-1 patched and healthy")
    alice.pause(run.id)
    bob.accept(run.id)
    bob.start_batch(run.id, 2, ["web-2"])
    bob.append(run.id, [wire.EventIn(type="runner_on_ok", host="web-2", task=TASKS[0], batch=2)])
    return bob.run(run.id)


TASKS = ["Gather the operating system facts", "Refresh the package lists", "Upgrade every package"]


def test_a_viewer_follows_every_run_on_the_status_page(stack, browser):
    alice, bob = client_of(stack, "alice"), client_of(stack, "bob")
    in_progress = a_run_in_progress(alice, bob)
    runs = alice.runs()

    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    landed = page.get_by_text("Opsbook runs")
    sign_in_with_browser(page, stack, "/services/runs/", "carol", landed)
    page.wait_for_url(f"{stack.hub_url}/services/runs/**", timeout=30_000)
    text = page.inner_text("body")
    for run in runs:
        assert f"{run.runbook}" in text and run.stack in text
    assert page.locator("meta[http-equiv=refresh]").count() == 1  # it refreshes by itself
    assert stack.env["RUNS_SERVICE_TOKEN"] not in page.content()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert "end of my shift" in text  # the handoff note, for the manager too
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    context.close()
    bob.abort(in_progress.id, "status page test over")
