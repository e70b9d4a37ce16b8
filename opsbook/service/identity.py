"""Who is asking: a JupyterHub user and the scopes their token carries, as the hub says.

Browsers come with the cookie our OAuth callback set (HubOAuth); notebooks with
`Authorization: token <JUPYTERHUB_API_TOKEN>`. Either way the hub is asked once per token and
cache period (RUNS_AUTH_CACHE_SECONDS), and answers with the user model including `scopes`: the
service decides from those alone, never from anything the client says about itself.

The web app depends only on the small `Identity` protocol, so its tests put a fake in its place
(token -> user and scopes) and test our logic without a hub.
"""

from __future__ import annotations

from typing import Any, Protocol

from tornado.httputil import url_concat
from tornado.web import RequestHandler

from opsbook.service.rules import Caller


class Identity(Protocol):
    async def caller(self, handler: RequestHandler) -> Caller | None:
        """The signed-in user, or None."""

    def login_url(self, handler: RequestHandler) -> str | None:
        """Where to send a browser to sign in (None: nowhere, answer 401/403)."""


def caller_from_model(model: dict[str, Any] | None) -> Caller | None:
    """The hub's user (or service) model -> Caller; only unfiltered scopes count."""
    if not model or not model.get("name"):
        return None
    return Caller(name=str(model["name"]), scopes=frozenset(model.get("scopes") or ()))


class HubIdentity:
    """The real thing: jupyterhub.services.auth.HubOAuth."""

    def __init__(self, hub_auth: Any) -> None:
        self.hub_auth = hub_auth

    async def caller(self, handler: RequestHandler) -> Caller | None:
        return caller_from_model(await self.hub_auth.get_user(handler, sync=False))

    def login_url(self, handler: RequestHandler) -> str | None:
        state = self.hub_auth.set_state_cookie(handler, next_url=handler.request.uri)
        return url_concat(self.hub_auth.login_url, {"state": state})


def make_hub_auth(settings: dict[str, Any]) -> Any:
    """HubOAuth configured from our checked settings (imported here: only the app needs it)."""
    from jupyterhub.services.auth import HubOAuth

    return HubOAuth(
        api_token=settings["JUPYTERHUB_API_TOKEN"],
        api_url=settings["JUPYTERHUB_API_URL"],
        base_url=settings["JUPYTERHUB_SERVICE_PREFIX"],
        oauth_client_id=settings["JUPYTERHUB_CLIENT_ID"],
        oauth_redirect_uri=settings["JUPYTERHUB_OAUTH_CALLBACK_URL"],
        cache_max_age=settings["RUNS_AUTH_CACHE_SECONDS"],
        # Scopes are checked per request by the service itself (403 naming the scope).
        access_scopes=set(),
    )
