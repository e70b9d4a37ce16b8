"""A manager (carol, a viewer) follows the runs on the status page, in a real browser.

It runs after the runbook tests (file order), so the page shows their real runs: the screenshot
in the README comes from here.
"""

from opsbook.runs import RunsClient

from .hubclient import HubUser
from .stack import ROOT

SCREENSHOT = ROOT / "docs" / "screenshots" / "status-page.png"


def test_a_viewer_follows_every_run_on_the_status_page(stack, browser):
    alice = HubUser(stack.hub_url, "alice")
    alice.sign_in(stack.demo_password)
    runs = RunsClient(f"{stack.hub_url}/services/runs", alice.new_token("status page test")).runs()

    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(f"{stack.hub_url}/services/runs/")
    page.wait_for_url(f"{stack.idp_url}/**")
    page.fill("input[name=username]", "carol")
    page.fill("input[name=password]", stack.demo_password)
    page.click("form [type=submit]")
    allow = page.get_by_role("button", name="Allow")
    allow.or_(page.get_by_text("Opsbook runs")).first.wait_for(timeout=30_000)
    if allow.is_visible():
        allow.click()
    page.wait_for_url(f"{stack.hub_url}/services/runs/**", timeout=30_000)
    text = page.inner_text("body")
    for run in runs:
        assert f"{run.runbook}" in text and run.stack in text
    assert page.locator("meta[http-equiv=refresh]").count() == 1  # it refreshes by itself
    assert stack.env["RUNS_SERVICE_TOKEN"] not in page.content()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    context.close()
