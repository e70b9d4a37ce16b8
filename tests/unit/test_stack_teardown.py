"""The test and bench stacks' teardown says what Docker would not remove (tests/e2e/stack.py)."""

import json
import subprocess

import pytest

from tests.e2e import stack


class FakeDocker:
    """Docker as the teardown sees it: networks, their endpoints, and which removals it refuses."""

    def __init__(self, networks: dict[str, list[str]], refused: set[str]) -> None:
        self.networks, self.refused, self.calls = networks, refused, []

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        self.calls.append(args)
        out, err, code = "", "", 0
        if args[:2] == ("network", "ls"):
            out = "\n".join(self.networks)
        elif args[:2] == ("network", "inspect"):
            endpoints = self.networks[args[-1]]
            out = json.dumps({f"id-{name}": {"Name": name} for name in endpoints})
        elif args[:2] == ("network", "rm"):
            if args[2] in self.refused:
                err, code = f"network {args[2]} id abc has active endpoints", 1
            else:
                del self.networks[args[2]]
        return subprocess.CompletedProcess(args, code, out, err)


def test_a_network_left_with_endpoints_is_disconnected_by_force_and_removed(monkeypatch):
    fake = FakeDocker({"opsbook-bench-03": ["ghost"], "opsbook-test-01": ["kept"]}, set())
    monkeypatch.setattr(stack, "docker", fake)
    stack._remove_leftover_networks("opsbook-bench")
    assert ("network", "disconnect", "-f", "opsbook-bench-03", "ghost") in fake.calls
    assert list(fake.networks) == ["opsbook-test-01"]  # another stack's network is not touched


def test_a_network_docker_still_refuses_is_said_on_stderr(monkeypatch, capsys):
    fake = FakeDocker({"opsbook-bench-03": [], "opsbook-bench": []}, {"opsbook-bench-03"})
    monkeypatch.setattr(stack, "docker", fake)
    stack._remove_leftover_networks("opsbook-bench")
    warning = capsys.readouterr().err
    assert "network opsbook-bench-03 is left" in warning
    assert "has active endpoints" in warning
    assert "docker network rm opsbook-bench-03" in warning
    assert list(fake.networks) == ["opsbook-bench-03"]


@pytest.mark.parametrize("name", ["opsbook-benchmark", "other-opsbook-bench-1"])
def test_names_that_only_look_alike_are_not_removed(monkeypatch, name):
    fake = FakeDocker({name: []}, set())
    monkeypatch.setattr(stack, "docker", fake)
    stack._remove_leftover_networks("opsbook-bench")
    assert list(fake.networks) == [name]
