"""The runs service: the ledger of patch runs, their handoffs and leases, and the status page.

A JupyterHub service in its own container (image opsbook/runs). It shares nothing with the client
in opsbook/runs.py but the wire format (opsbook/wire.py), and imports neither Ansible nor
Prometheus, so its image installs the opsbook package without them. See README.md here for the API.

Modules: rules (who may do what; pure), tables and store (the database), identity (the hub's
OAuth and tokens), oncall (the on-call group), notify (webhook), pages (HTML), app (tornado),
settings and __main__ (start-up).
"""
