"""The runs service: the ledger of patch runs, their handoffs and leases, and the status page.

A JupyterHub service in its own container (image opsbook/runs). It shares nothing with its client
(opsbook/runsclient.py) and the hub but the contract (opsbook/contract/), and imports neither
Ansible nor Prometheus (it runs the `ansible-inventory` command to read the inventory), so its
image installs the service and the contract, not the toolkit. See README.md here for the API.

Modules: fleet (what a run is: stacks, hosts, environments, batches, from the inventory), rules
(who may do what; pure), tables and store (the database), identity (the hub's OAuth and tokens),
oncall (the on-call group), notify (webhook), pages (HTML), app (tornado), settings and __main__
(start-up).
"""
