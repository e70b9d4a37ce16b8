"""A real browser (Debian's Chromium, driven by Playwright) signs in and reaches JupyterLab."""

from .stack import ROOT

SCREENSHOT = ROOT / "docs" / "screenshots" / "jupyterlab.png"


def test_alice_signs_in_and_lands_in_jupyterlab_with_the_runbooks(stack, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{stack.hub_url}/hub/")
    page.wait_for_url(f"{stack.idp_url}/**")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", stack.demo_password)
    page.click("form [type=submit]")
    allow = page.get_by_role("button", name="Allow")
    hub_page = page.locator("#jupyterhub-logo, .jp-LabShell")
    allow.or_(hub_page).first.wait_for(timeout=30_000)
    if allow.is_visible():  # consent, on a first sign-in
        allow.click()
    page.wait_for_url("**/user/alice/lab**", timeout=120_000)
    runbooks = page.locator(".jp-DirListing-item", has_text="runbooks")
    runbooks.wait_for(timeout=60_000)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    context.close()
