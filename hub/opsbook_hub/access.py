"""Who may do what, from the groups the identity provider sends; nothing is managed by hand.

- admin groups: the admin page, and starting and stopping anyone's server; not JupyterHub's
  built-in `admin` role (see ADMIN_SCOPES: no tokens for others, no way into their servers);
- server groups: a container of their own (engineers, on-call), and runs on non-production stacks;
- on-call groups: also runs on production stacks, and taking over orphaned runs;
- viewer groups: may log in and read (the runs status page), but get no server;
- anyone else: refused at login.

JupyterHub enforces it through roles: the default `user` role is narrowed to what a viewer may do,
the full `self` scope goes to the server groups only, and the runs service's custom scopes go to
the groups above. The spawner and the runs service check again, so a wrong role setup fails
closed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from opsbook.contract.scopes import (
    SCOPE_PRODUCTION,
    SCOPE_READ,
    SCOPE_TAKEOVER,
    SCOPE_WRITE,
)

# What every logged-in user may do: see themselves, use hub services (the runs status page).
VIEWER_SCOPES = (
    "read:users:name!user",
    "read:users:groups!user",
    "read:users:activity!user",
    "users:activity!user",
    "read:servers!user",
    "access:services",
    SCOPE_READ,
)


# What the admin groups may do: see and manage users and their servers, nothing in anyone's name.
# JupyterHub's built-in `admin` role would also give `tokens` (mint a token for anyone, then act as
# them: the runs service's ledger would show that person), `access:servers` (open anyone's
# JupyterLab, run code as them), `admin:auth_state` (read the provider's tokens kept for a user),
# `shares`, `admin:users` (rename users, make admins), `proxy` and `shutdown`. Nobody holds it.
ADMIN_SCOPES = (
    "admin-ui",
    "list:users",
    "read:users",
    "delete:users",
    "list:groups",
    "read:groups",
    "servers",
    "read:roles",
    "list:services",
    "read:services",
    "read:hub",
    "read:metrics",
)

ENGINEER_ROLE = "engineer"
ONCALL_ROLE = "oncall"
ADMIN_ROLE = "opsbook-admin"


@dataclass(frozen=True)
class GroupPolicy:
    admin: frozenset[str]
    server: frozenset[str]
    oncall: frozenset[str]
    viewer: frozenset[str]

    @classmethod
    def from_names(
        cls,
        admin: Iterable[str],
        server: Iterable[str],
        oncall: Iterable[str],
        viewer: Iterable[str],
    ) -> GroupPolicy:
        return cls(frozenset(admin), frozenset(server), frozenset(oncall), frozenset(viewer))

    @property
    def allowed(self) -> frozenset[str]:
        """Groups that may log in at all."""
        return self.admin | self.server | self.oncall | self.viewer

    def may_log_in(self, groups: Iterable[str]) -> bool:
        return bool(self.allowed & set(groups))

    def may_have_server(self, groups: Iterable[str]) -> bool:
        return bool((self.server | self.oncall) & set(groups))

    def is_admin(self, groups: Iterable[str]) -> bool:
        return bool(self.admin & set(groups))

    def roles(self) -> list[dict]:
        """JupyterHub roles: a narrowed default `user` role, the engineers', on-call's and
        admins'; and the built-in `admin` role held by nobody.

        The `admin` role's members are given as an empty list, so that JupyterHub makes its
        membership exactly that at every start: someone made admin before (an older Opsbook, the
        API) loses it, and with it `.admin` (the hub keeps the two in step).
        """
        return [
            {
                "name": "user",
                "description": "Every logged-in user: read-only, no server",
                "scopes": list(VIEWER_SCOPES),
            },
            {
                "name": ENGINEER_ROLE,
                "description": "Members of the server groups: their own server and tokens",
                "scopes": ["self", SCOPE_WRITE],
                "groups": sorted(self.server | self.oncall),
            },
            {
                "name": ONCALL_ROLE,
                "description": "On-call engineers: production runs and takeovers",
                "scopes": [SCOPE_PRODUCTION, SCOPE_TAKEOVER],
                "groups": sorted(self.oncall),
            },
            {
                "name": ADMIN_ROLE,
                "description": "Admins: the admin page, users and their servers, nobody's tokens",
                "scopes": list(ADMIN_SCOPES),
                "groups": sorted(self.admin),
            },
            {"name": "admin", "users": [], "services": []},
        ]

    def refusal(self) -> str:
        """What someone in none of the groups reads at login."""
        return (
            "Your account is in none of the Opsbook groups ("
            + ", ".join(sorted(self.allowed))
            + "). Ask whoever runs your team's single sign-on to add you to one of them, "
            "then sign in again."
        )
