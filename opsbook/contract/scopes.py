"""The runs service's permissions: JupyterHub custom scopes, granted by group at the hub.

The hub declares them (with these descriptions) and gives them to roles; the service checks them
on every request. Nothing else decides who may run what.
"""

from __future__ import annotations

SCOPE_READ = "custom:runs:read"
SCOPE_WRITE = "custom:runs:write"
SCOPE_PRODUCTION = "custom:runs:production"
SCOPE_TAKEOVER = "custom:runs:takeover"
SCOPES = (SCOPE_READ, SCOPE_WRITE, SCOPE_PRODUCTION, SCOPE_TAKEOVER)

SCOPE_DESCRIPTIONS = {
    SCOPE_READ: "Read runs of patch runbooks and their status page.",
    SCOPE_WRITE: "Start and drive runs on non-production stacks; notes; hand off, accept, abort.",
    SCOPE_PRODUCTION: "Start, accept and drive runs on production stacks.",
    SCOPE_TAKEOVER: "Take over a run whose owner's lease ran out (orphaned), giving a reason.",
}
