"""GenericOAuthenticator, with the two gaps an ops team cannot live with closed.

1. Group loss is enforced at refresh. oauthenticator re-reads groups when it refreshes a user but
   does not re-check `allowed_groups`: someone removed from every Opsbook group would stay in until
   their cookie expires. Here, a refresh that finds them in none of the groups requires a new login
   (which then refuses them) and stops their servers at once; one that moves them out of the
   server groups stops their servers too.
2. The identity provider being down is said plainly. Login shows a page naming the problem instead
   of a browser error, and a refresh that cannot reach the provider keeps the current session (the
   team can still work on running servers during an SSO outage; revocation needs the provider to
   know about it anyway, and happens at the first refresh once it answers).
   The check is asked once for everybody: when a whole team signs in at once (the start of an
   incident), thirty checks would add thirty requests to a provider that is already busy and,
   each with its own deadline, turn a slow answer into "the provider is down" for most of them.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthLoginHandler
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Any as AnyTrait
from traitlets import Float

from .access import GroupPolicy

# Errors that mean "the provider did not answer", as opposed to "the provider said no".
UNREACHABLE = (OSError, socket.gaierror, asyncio.TimeoutError)


def provider_unreachable(error: BaseException) -> bool:
    """True for connection failures and timeouts (tornado reports those as HTTP 599)."""
    if isinstance(error, HTTPClientError):
        return error.code == 599
    return isinstance(error, UNREACHABLE)


class ProviderCheckingLoginHandler(OAuthLoginHandler):
    """Redirects to the provider only when it answers; otherwise a page that says why not."""

    async def get(self) -> None:
        if not await self.authenticator.provider_answers():
            self.set_status(503)
            html = await self.render_template(
                "provider-down.html", login_service=self.authenticator.login_service
            )
            self.finish(html)
            return
        super().get()


class OpsbookAuthenticator(GenericOAuthenticator):
    login_handler = ProviderCheckingLoginHandler

    group_policy = AnyTrait(
        help="opsbook_hub.access.GroupPolicy: who may log in, have a server, administer."
    ).tag(config=True)

    provider_check_timeout = Float(
        3.0, help="Seconds to wait for the provider before saying it is down."
    ).tag(config=True)

    provider_up_for = Float(
        10.0,
        help="Seconds an answer from the provider counts, so that logins arriving together check "
        "it once. A failed check is never reused: the next login asks again.",
    ).tag(config=True)

    _provider_seen_at = -float("inf")  # time.monotonic() of the provider's last answer
    _provider_check: asyncio.Future[bool] | None = None  # the check in flight, shared

    async def provider_answers(self) -> bool:
        """Whether the provider answers: recently seen, or one check shared by every login that
        asks while it is in flight."""
        if time.monotonic() - self._provider_seen_at < self.provider_up_for:
            return True
        if self._provider_check is None:
            check = asyncio.ensure_future(self._ask_provider())
            check.add_done_callback(lambda _: setattr(self, "_provider_check", None))
            self._provider_check = check
        return await asyncio.shield(self._provider_check)

    async def _ask_provider(self) -> bool:
        """Any HTTP answer from the token endpoint's server means the provider is up."""
        request = HTTPRequest(
            self.token_url,
            method="GET",
            connect_timeout=self.provider_check_timeout,
            request_timeout=self.provider_check_timeout,
        )
        try:
            await AsyncHTTPClient().fetch(request, raise_error=False)
        except Exception as error:  # any failure to get an answer at all
            self.log.warning("Identity provider at %s does not answer: %s", self.token_url, error)
            return False
        self._provider_seen_at = time.monotonic()
        return True

    async def refresh_user(self, user: Any, handler: Any = None, **kwargs: Any) -> Any:
        try:
            refreshed = await super().refresh_user(user, handler, **kwargs)
        except Exception as error:
            if not provider_unreachable(error):
                raise
            self.log.warning(
                "Identity provider unreachable while refreshing %s (%s); keeping the session",
                user.name,
                error,
            )
            return True
        if not isinstance(refreshed, dict):
            return refreshed
        groups = refreshed.get("groups", [])
        policy: GroupPolicy = self.group_policy
        if not policy.may_log_in(groups):
            self.log.warning("%s is no longer in any Opsbook group: access revoked", user.name)
            await self._stop_servers(user, handler)
            return False
        if not policy.may_have_server(groups):
            await self._stop_servers(user, handler)
        return refreshed

    async def _stop_servers(self, user: Any, handler: Any) -> None:
        if handler is None:
            return
        for name, spawner in list(user.spawners.items()):
            if spawner.active:
                self.log.warning("Stopping %s's server %r: no longer allowed", user.name, name)
                await handler.stop_single_user(user, name)
