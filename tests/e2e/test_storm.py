"""A login storm of ten: the start of an incident, when the whole team signs in at once.

Ten engineers (storm-01 … storm-10, group ops) sign in through the provider's real form and start
their servers at the same instant. Every one must get a working server (its Jupyter API answers
through the proxy) and nobody may see a 5xx on the way, from the provider, the hub or the proxy.
The deadline is a wait, not a figure: `make bench` measures a storm of thirty.
"""

from __future__ import annotations

import pytest

from .storm import login_storm, stop_servers

ENGINEERS = [f"storm-{n:02d}" for n in range(1, 11)]
# Long enough for ten server starts on a busy 2-core CI machine (each costs ~1 CPU-second).
DEADLINE = 180


@pytest.fixture
def storm(stack):
    result = login_storm(stack.hub_url, ENGINEERS, stack.demo_password, DEADLINE)
    yield result
    stop_servers(result)


def test_ten_engineers_signing_in_at_once_all_get_a_server_without_errors(storm):
    assert storm.errors == {}, f"errors during the storm: {storm.errors}"
    ready = {e.user.name for e in storm.engineers if e.ready_after is not None}
    assert ready == set(ENGINEERS), f"without a working server: {set(ENGINEERS) - ready}"
    waits = sorted(storm.waits)
    print(f"storm of ten: first ready {waits[0]:.1f} s, last {waits[-1]:.1f} s")
