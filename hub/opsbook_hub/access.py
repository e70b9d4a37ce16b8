"""Who may do what, from the groups the identity provider sends; nothing is managed by hand.

- admin groups: hub admins (the admin page, other users' servers);
- server groups: a container of their own (engineers, on-call);
- viewer groups: may log in and read (the runs status page), but get no server;
- anyone else: refused at login.

JupyterHub enforces the server rule through roles: the default `user` role is narrowed to what a
viewer may do, and the full `self` scope is granted to the server groups only. The spawner checks
it again before starting a container, so a wrong role setup fails closed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# What every logged-in user may do: see themselves, use hub services (the runs status page).
VIEWER_SCOPES = (
    "read:users:name!user",
    "read:users:groups!user",
    "read:users:activity!user",
    "users:activity!user",
    "read:servers!user",
    "access:services",
)

ENGINEER_ROLE = "engineer"


@dataclass(frozen=True)
class GroupPolicy:
    admin: frozenset[str]
    server: frozenset[str]
    viewer: frozenset[str]

    @classmethod
    def from_names(
        cls, admin: Iterable[str], server: Iterable[str], viewer: Iterable[str]
    ) -> GroupPolicy:
        return cls(frozenset(admin), frozenset(server), frozenset(viewer))

    @property
    def allowed(self) -> frozenset[str]:
        """Groups that may log in at all."""
        return self.admin | self.server | self.viewer

    def may_log_in(self, groups: Iterable[str]) -> bool:
        return bool(self.allowed & set(groups))

    def may_have_server(self, groups: Iterable[str]) -> bool:
        return bool(self.server & set(groups))

    def is_admin(self, groups: Iterable[str]) -> bool:
        return bool(self.admin & set(groups))

    def roles(self) -> list[dict]:
        """JupyterHub roles: a narrowed default `user` role and the engineers' full one."""
        return [
            {
                "name": "user",
                "description": "Every logged-in user: read-only, no server",
                "scopes": list(VIEWER_SCOPES),
            },
            {
                "name": ENGINEER_ROLE,
                "description": "Members of the server groups: their own server and tokens",
                "scopes": ["self"],
                "groups": sorted(self.server),
            },
        ]

    def refusal(self) -> str:
        """What someone in none of the groups reads at login."""
        return (
            "Your account is in none of the Opsbook groups ("
            + ", ".join(sorted(self.allowed))
            + "). Ask whoever runs your team's single sign-on to add you to one of them, "
            "then sign in again."
        )
