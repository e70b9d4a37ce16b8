"""A real browser (Debian's Chromium, driven by Playwright) signs in and reaches JupyterLab."""

from .hubclient import sign_in_with_browser
from .stack import ROOT

SCREENSHOT = ROOT / "docs" / "screenshots" / "jupyterlab.png"


def test_alice_signs_in_and_lands_in_jupyterlab_with_the_runbooks(stack, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    landed = page.locator("#jupyterhub-logo, .jp-LabShell")
    sign_in_with_browser(page, stack, "/hub/", "alice", landed)
    page.wait_for_url("**/user/alice/lab**", timeout=120_000)
    runbooks = page.locator(".jp-DirListing-item", has_text="runbooks")
    runbooks.wait_for(timeout=60_000)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    context.close()
