"""Start the runs service: `python -m opsbook.service` (the opsbook/runs image's command).

Checks every setting, loads the SSH user CA key (RUNS_SSH_CA_KEY) and opens the database before
listening, so a mistake stops the start with one line naming it (exit 1) instead of a service
that fails its first request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
from collections.abc import Mapping

from opsbook.contract import stacks
from opsbook.service.app import Context, make_app, start_sweeper
from opsbook.service.fleet import InventorySource
from opsbook.service.identity import HubIdentity, make_hub_auth
from opsbook.service.notify import Notifier
from opsbook.service.oncall import HubOncall
from opsbook.service.promotions import SshPromoter
from opsbook.service.settings import SettingsError, approval_policy, load, masked_database_url
from opsbook.service.silences import Alertmanager
from opsbook.service.ssh_ca import CaKeyError, CertificateAuthority
from opsbook.service.store import Store, StoreError

log = logging.getLogger("opsbook.runs")


def _fail(lines: str) -> int:
    for line in lines.splitlines():
        print(f"opsbook runs: {line}", file=sys.stderr)
    return 1


def promoter(settings: dict, ssh_ca: CertificateAuthority) -> SshPromoter | None:
    """The errata promoter, if RUNS_PACKAGE_REPO_SSH names the repository host."""
    target = settings["RUNS_PACKAGE_REPO_SSH"]
    if target is None:
        log.info("errata promotions: off (RUNS_PACKAGE_REPO_SSH is empty)")
        return None
    log.info("errata promotions on %s, its host certificate checked against the host CA", target)
    return SshPromoter(ssh_ca, target, settings["RUNS_SSH_HOST_CA"])


async def serve(settings: dict, store: Store, ssh_ca: CertificateAuthority) -> None:
    hub_auth = make_hub_auth(settings)
    prefix = settings["JUPYTERHUB_SERVICE_PREFIX"]
    ctx = Context(
        store=store,
        identity=HubIdentity(hub_auth),
        oncall=HubOncall(
            settings["JUPYTERHUB_API_URL"],
            settings["JUPYTERHUB_API_TOKEN"],
            settings["RUNS_ONCALL_GROUP"],
            cache_seconds=settings["RUNS_AUTH_CACHE_SECONDS"],
        ),
        notifier=Notifier(
            settings["RUNS_WEBHOOK_URL"], public_url=settings["RUNS_PUBLIC_URL"], prefix=prefix
        ),
        prefix=prefix,
        hub_auth=hub_auth,
        ssh_ca=ssh_ca,
        promoter=promoter(settings, ssh_ca),
    )
    # The OAuth cookie only holds a hub token: a new secret per start means browsers go through
    # the hub's OAuth once more (invisibly) after a restart; notebooks use tokens and never notice.
    app = make_app(ctx, cookie_secret=secrets.token_bytes(32))
    server = app.listen(settings["RUNS_PORT"], xheaders=True)
    sweeper = start_sweeper(ctx, settings["RUNS_SWEEP_SECONDS"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info(
        "runs service on port %d under %s; database %s; lease %d s; on-call group %s; webhook %s",
        settings["RUNS_PORT"],
        prefix,
        masked_database_url(settings["RUNS_DATABASE_URL"]),
        settings["RUNS_LEASE_SECONDS"],
        settings["RUNS_ONCALL_GROUP"],
        "on" if settings["RUNS_WEBHOOK_URL"] else "off",
    )
    await stop.wait()
    log.info("stopping")
    sweeper.stop()
    server.stop()
    await server.close_all_connections()
    ctx.executor.shutdown(wait=True)


def main(environ: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = load(os.environ if environ is None else environ)
    except SettingsError as error:
        return _fail(str(error))
    try:
        ssh_ca = CertificateAuthority.load(
            settings["RUNS_SSH_CA_KEY"],
            minutes=settings["RUNS_SSH_CERT_MINUTES"],
            source_addresses=settings["RUNS_SSH_SOURCE_ADDRESSES"],
        )
    except CaKeyError as error:
        return _fail(f"RUNS_SSH_CA_KEY: {error}")
    log.info(
        "SSH user CA %s; certificates valid %d min%s",
        ssh_ca.fingerprint,
        settings["RUNS_SSH_CERT_MINUTES"],
        f", from {', '.join(ssh_ca.source_addresses)}" if ssh_ca.source_addresses else "",
    )
    inventory = InventorySource(settings["RUNS_INVENTORY"], settings[stacks.NONPRODUCTION_SETTING])
    # A broken inventory does not stop the service (the status page and running runs go on);
    # new runs, accepts and takeovers are refused with this reason until it is fixed.
    problem = inventory.problem()
    if problem:
        log.error("RUNS_INVENTORY: %s", problem)
    else:
        fleet = inventory.current()
        log.info(
            "inventory %s: stacks %s; non-production environments: %s",
            fleet.source,
            ", ".join(
                f"{s.name} ({s.environment}{', production' if s.production else ''})"
                for s in fleet.stacks.values()
            ),
            ", ".join(sorted(fleet.nonproduction)) or "none (every environment is production)",
        )
    try:
        store = Store(
            settings["RUNS_DATABASE_URL"],
            fleet=inventory.current,
            alertmanager=Alertmanager(settings["RUNS_ALERTMANAGER_URL"]),
            lease_seconds=settings["RUNS_LEASE_SECONDS"],
            approval=approval_policy(settings),
        )
    except StoreError as error:
        url = masked_database_url(settings["RUNS_DATABASE_URL"])
        return _fail(f"RUNS_DATABASE_URL: {error} ({url})")
    log.info("approvals: %s", store.approval.describe())
    renewed = store.extend_leases_after_restart()
    if renewed:
        log.info(
            "gave %d running run(s) a fresh lease: no kernel could renew while we were down",
            renewed,
        )
    # Silences this service set whose batch is no longer in flight (it stopped mid-way): expired
    # now, not at their ceiling; one Alertmanager does not answer for is tried again every sweep.
    log.info(
        "silences at %s; %d left over from before the start expired",
        settings["RUNS_ALERTMANAGER_URL"],
        store.sweep_silences(),
    )
    try:
        asyncio.run(serve(settings, store, ssh_ca))
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
