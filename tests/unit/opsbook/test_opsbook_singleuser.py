"""opsbook-singleuser's deferred imports (opsbook.singleuser), against the real JupyterHub.

Each check runs in an interpreter of its own: imports are global to a process. The test venv has
JupyterHub but no Jupyter server, so these import the hub's modules that jupyterhub-singleuser
imports (the request log, the service auth); tests/e2e/test_images.py imports the single-user
server itself in the engineers' image.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from opsbook.singleuser import KEPT_OUT

# What jupyterhub-singleuser imports from the hub (jupyterhub/singleuser/mixins.py, extension.py).
SERVER_IMPORTS = "import jupyterhub.log, jupyterhub.services.auth, jupyterhub.utils"
HUB_ONLY = list(KEPT_OUT)


def run(script: str) -> dict:
    """Run `script` in a new interpreter; it prints one JSON line last."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def loaded_after(setup: str) -> list[str]:
    return run(
        f"""
        import json, sys
        {setup}
        {SERVER_IMPORTS}
        print(json.dumps([name for name in {HUB_ONLY!r} if name in sys.modules]))
        """
    )


def test_without_it_the_servers_hub_imports_load_the_orm_and_the_handlers():
    assert loaded_after("pass") == HUB_ONLY


def test_with_it_they_load_none_of_them():
    assert loaded_after("from opsbook import singleuser; singleuser.install()") == []


def test_a_deferred_module_is_imported_for_real_at_its_first_use():
    result = run(
        f"""
        import json, sys
        from opsbook import singleuser
        singleuser.install()
        {SERVER_IMPORTS}
        from jupyterhub import orm
        before = type(sys.modules["jupyterhub.orm"]).__name__
        server = orm.Server
        import jupyterhub
        print(json.dumps({{
            "before": before,
            "after": type(sys.modules["jupyterhub.orm"]).__name__,
            "class": f"{{server.__module__}}.{{server.__name__}}",
            "same": server is sys.modules["jupyterhub.orm"].Server,
            "parent": jupyterhub.orm is sys.modules["jupyterhub.orm"],
        }}))
        """
    )
    assert result == {
        "before": "Deferred",
        "after": "module",
        "class": "jupyterhub.orm.Server",
        "same": True,
        "parent": True,
    }


def test_the_health_check_stand_in_matches_what_the_real_class_matches():
    """The request log's `isinstance(handler, HealthCheckHandler)`: nothing before the real
    handlers are loaded, then exactly the real class's instances."""
    result = run(
        f"""
        import json
        from opsbook import singleuser
        singleuser.install()
        {SERVER_IMPORTS}
        from jupyterhub.log import HealthCheckHandler as stand_in
        before = isinstance(object(), stand_in)
        from jupyterhub.handlers import BaseHandler
        from jupyterhub.handlers.pages import HealthCheckHandler, RootHandler
        print(json.dumps({{
            "before": before,
            "health": isinstance(HealthCheckHandler.__new__(HealthCheckHandler), stand_in),
            "root": isinstance(RootHandler.__new__(RootHandler), stand_in),
            "base": BaseHandler.__module__,
        }}))
        """
    )
    assert result == {
        "before": False,
        "health": True,
        "root": False,
        "base": "jupyterhub.handlers.base",
    }


def test_sqlalchemy_is_lent_to_the_hub_modules_until_used_then_they_hold_the_real_one():
    """jupyterhub.scopes imports the package, jupyterhub.utils its base error: both get stand-ins
    until SQLAlchemy is used, then the real module and class, in their own globals."""
    result = run(
        f"""
        import json, sys
        from opsbook import singleuser
        singleuser.install()
        {SERVER_IMPORTS}
        import jupyterhub.scopes as scopes, jupyterhub.utils as utils
        stand_in = utils.SQLAlchemyError
        before = [type(scopes.sa).__name__, "sqlalchemy" in sys.modules,
                  isinstance(Exception(), stand_in)]
        scopes.sa.inspect  # the first use
        import sqlalchemy, sqlalchemy.exc
        error = sqlalchemy.exc.OperationalError("SELECT 1", {{}}, Exception("gone"))
        print(json.dumps({{
            "before": before,
            "module": scopes.sa is sqlalchemy,
            "class": utils.SQLAlchemyError is sqlalchemy.exc.SQLAlchemyError,
            "instance": isinstance(error, stand_in),
        }}))
        """
    )
    assert result == {
        "before": ["Lent", False, False],
        "module": True,
        "class": True,
        "instance": True,
    }


def test_the_hubs_database_errors_are_caught_as_before_once_sqlalchemy_is_loaded():
    """`catch_db_error` (jupyterhub.utils) names the stand-in in its `except` until SQLAlchemy
    loads; from then on it catches a real SQLAlchemy error and rolls back."""
    result = run(
        f"""
        import asyncio, json, logging
        from opsbook import singleuser
        singleuser.install()
        {SERVER_IMPORTS}
        from jupyterhub.utils import catch_db_error
        import sqlalchemy.exc

        class Handler:
            log = logging.getLogger("test")
            rolled_back = False

            class db:
                @staticmethod
                def rollback():
                    Handler.rolled_back = True

            @catch_db_error
            def query(self):
                raise sqlalchemy.exc.OperationalError("SELECT 1", {{}}, Exception("gone"))

        asyncio.run(Handler().query())
        print(json.dumps({{"rolled_back": Handler.rolled_back}}))
        """
    )
    assert result == {"rolled_back": True}
