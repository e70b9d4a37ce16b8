"""The demo's monitoring, as the runbooks rely on it: scrapes, alerts, the dashboard."""

import requests

from .hubclient import HubUser, sign_in_with_browser
from .stack import ROOT, compose, docker, wait_for

DASHBOARD = "/user/alice/voila/render/runbooks/health-check.ipynb"
SCREENSHOT = ROOT / "docs" / "screenshots" / "health-dashboard.png"


def prometheus(stack, query: str) -> list[dict]:
    answer = requests.get(
        f"http://127.0.0.1:{stack.env['PROMETHEUS_PORT']}/api/v1/query",
        params={"query": query},
        timeout=5,
    )
    return answer.json()["data"]["result"]


def recorder_url() -> str:
    container = compose("ps", "-q", "recorder").stdout.strip()
    address = docker(
        "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container
    ).stdout.strip()
    return f"http://{address}:8080"


def test_prometheus_scrapes_every_fleet_host_and_the_hub_with_its_token(stack):
    def everything_up() -> bool:
        up = {
            (r["metric"]["job"], r["metric"]["instance"]): r["value"][1]
            for r in prometheus(stack, "up")
        }
        fleet = {i for (job, i), v in up.items() if job == "fleet" and v == "1"}
        return len(fleet) == 6 and up.get(("hub", "hub:8081")) == "1"

    wait_for(everything_up, 60, "every fleet exporter and the hub scraped")
    # the hub's own metrics, read with the prometheus service's token
    assert prometheus(stack, "jupyterhub_active_users")


def test_a_host_that_goes_down_pages_through_alertmanager(stack):
    host = compose("ps", "-q", "web-3").stdout.strip()
    docker("exec", host, "opsbook-exporter", "disable")
    try:

        def paged(status: str) -> bool:
            records = requests.get(f"{recorder_url()}/alertmanager", timeout=5).json()
            return any(
                alert["labels"].get("alertname") == "InstanceDown"
                and alert["labels"].get("instance") == "web-3:9100"
                and alert["status"] == status
                for record in records
                for alert in record["body"].get("alerts", [])
            )

        wait_for(lambda: paged("firing"), 180, "InstanceDown for web-3 delivered to the receiver")
    finally:
        docker("exec", host, "opsbook-exporter", "enable")
    wait_for(lambda: paged("resolved"), 180, "the resolution delivered too")


def test_the_fleet_health_dashboard_renders_in_voila(stack, browser):
    """Voilà runs the notebook and draws its widgets in the browser: only a browser sees the
    tables, and only a browser can tell that the code stays hidden."""
    alice = HubUser(stack.hub_url, "alice")
    alice.sign_in(stack.demo_password)
    alice.start_server()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    gate_table = page.get_by_text("db-1", exact=True)
    sign_in_with_browser(page, stack, DASHBOARD, "alice", gate_table)
    gate_table.wait_for(timeout=120_000)
    page.get_by_text("web-1", exact=True).wait_for(timeout=30_000)
    assert "Settings.from_env()" not in page.content()  # the code is hidden: a dashboard
    page.screenshot(path=str(SCREENSHOT), full_page=False)
    context.close()
