"""The contract between the hub, the runs service and the runbook toolkit: plain data only.

These three parts share this package and nothing else, and it imports only the standard library,
so each image installs it beside its own code (the hub's image copies it in; the service's image
installs the service and this, not the toolkit):

- `wire`: every request and response body of the runs service's API, and its routes;
- `scopes`: the JupyterHub custom scopes the hub grants and the service checks;
- `stacks`: what a stack name may be, and the one answer to "is this environment production?";
- `settings`: the settings registry (declare, parse, check at start) and the shared setting names.
"""
