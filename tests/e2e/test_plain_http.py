"""TLS_MODE=off still works: sign-in and a server over plain http (a deployment behind a reverse
proxy that terminates TLS, or a machine of one's own), with no Secure-only cookie in the way.

A small stack of its own beside the suite's (proxy, hub, provider, runs service), on other ports
and another compose project, removed at the end.
"""

import dataclasses

import pytest
import requests

from . import stack as test_stack
from .conftest import docker_answers
from .hubclient import HubUser

HTTP = dataclasses.replace(
    test_stack.TEST,
    # Not "<project>-http": the suite's stack removes every "<project>-*" container at its end.
    project=f"{test_stack.TEST.project}http",
    stack_dir=test_stack.TEST.stack_dir.with_name("test-stack-http"),
    hub_port=test_stack.TEST.hub_port + 10,
    idp_port=test_stack.TEST.idp_port + 10,
    prometheus_port=test_stack.TEST.prometheus_port + 10,
    tls=False,
    services=("proxy", "hub", "idp", "runs"),
)


@pytest.fixture(scope="module")
def http_stack():
    if not docker_answers():
        pytest.skip("no Docker engine answers (`docker info` fails): the e2e tests need one")
    running = test_stack.up(HTTP)
    yield running
    test_stack.down(HTTP)


def test_sign_in_and_a_server_over_plain_http(http_stack):
    assert http_stack.hub_url.startswith("http://")
    erin = HubUser(http_stack.hub_url, "erin")
    answer = erin.sign_in(http_stack.demo_password)
    assert answer.status_code == 302
    assert "Strict-Transport-Security" not in answer.headers
    assert not [cookie.name for cookie in erin.session.cookies if cookie.secure]
    erin.start_server()
    lab = erin.session.get(f"{http_stack.hub_url}/user/erin/lab", timeout=30)
    assert lab.status_code == 200
    assert lab.url == f"{http_stack.hub_url}/user/erin/lab"
    erin.stop_server()


def test_nothing_listens_for_https_nor_redirects(http_stack):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://127.0.0.1:{HTTP.hub_port}/hub/health", timeout=10)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{HTTP.hub_http_port}/hub/health", timeout=10)
