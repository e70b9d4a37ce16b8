"""`opsbook-singleuser`: jupyterhub-singleuser, started without the hub's database layer.

The engineer's container runs this instead of `jupyterhub-singleuser`, with the same arguments;
it runs that same server, unchanged. Why: jupyterhub-singleuser imports `jupyterhub.log`, which
imports the hub's page handlers, and with them `jupyterhub.orm`: SQLAlchemy's ORM and Alembic.
In the singleuser image, at one CPU, that was 0.2 s of every server start (0.31 s of imports, of
which SQLAlchemy's core, 0.09 s, stays: JupyterHub's utilities need it) for code that only the
hub runs; it was most of what made a spawn slower than `docker run` of the same image
(tests/bench/notes.md). The upstream fix is for JupyterHub to import them where it uses them.

How: `jupyterhub.orm` and `jupyterhub.handlers` (and its `pages`) are imported as stand-ins,
`Deferred` modules that import the real module at the first use of any of their attributes and
hand it over. A single-user server never uses them, so they never load; anything that does use
them gets the real thing, only later. The one name taken from them at import time, `from
.handlers.pages import HealthCheckHandler` (the request log lowers health checks to debug), is
a stand-in class that no object is an instance of while the real handlers are not loaded (none
can be), and that asks the real class once they are. Nothing else changes. A JupyterHub upgrade
that starts using these modules at import time loads them as before, only as slowly as before;
tests/unit/opsbook/test_opsbook_singleuser.py fails then, saying which.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import types
from collections.abc import Sequence
from typing import Any

# The hub's own modules that a single-user server imports but never uses.
DEFERRED = ("jupyterhub.orm", "jupyterhub.handlers", "jupyterhub.handlers.pages")
# What comes with the deferred modules and only with them: the tests check it stays out.
KEPT_OUT = ("alembic", "sqlalchemy.orm", "jupyterhub.objects", "jupyterhub.handlers.base")
# Names read from a deferred module while others are imported: module -> class names.
STAND_IN_CLASSES = {"jupyterhub.handlers.pages": ("HealthCheckHandler",)}


class Deferred(types.ModuleType):
    """A module whose real import waits until one of its attributes is read."""

    def __getattr__(self, name: str) -> Any:
        # Called only for names the stand-in lacks. Its own __spec__, __name__ and __file__ (and
        # a package's __path__) answer the import system; a plain module's missing __path__,
        # which the import system asks for too, must not load it.
        if name == "__path__":
            raise AttributeError(name)
        return getattr(FINDER.load(self.__name__), name)


class _StandInClass(type):
    """The metaclass of a stand-in class: instance checks go to the real class once its
    module is loaded; before that nothing can be an instance of it."""

    def __instancecheck__(cls, instance: object) -> bool:
        real = sys.modules.get(cls.__module__)
        if real is None or isinstance(real, Deferred):
            return False
        return isinstance(instance, getattr(real, cls.__name__))


class DeferringFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports the modules of `deferred` as Deferred stand-ins, until `load` imports one."""

    def __init__(self, deferred: Sequence[str], stand_in_classes: dict[str, Sequence[str]]):
        self.deferred = set(deferred)
        self.stand_in_classes = stand_in_classes
        self.lock = threading.RLock()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.deferred:
            return None
        real = importlib.machinery.PathFinder.find_spec(fullname, path)
        if real is None:
            return None
        spec = importlib.util.spec_from_loader(fullname, self, origin=real.origin)
        # A package's stand-in keeps the real search path: its submodules import as usual.
        spec.submodule_search_locations = real.submodule_search_locations
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return Deferred(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__file__ = module.__spec__.origin
        for name in self.stand_in_classes.get(module.__name__, ()):
            stand_in = _StandInClass(name, (), {"__module__": module.__name__})
            setattr(module, name, stand_in)

    def load(self, fullname: str) -> types.ModuleType:
        """Import `fullname` for real (once), in place of its stand-in and its submodules'."""
        with self.lock:
            module = sys.modules.get(fullname)
            if module is not None and not isinstance(module, Deferred):
                return module
            self.deferred -= {name for name in self.deferred if _within(name, fullname)}
            for name in [name for name in sys.modules if _within(name, fullname)]:
                if isinstance(sys.modules[name], Deferred):
                    del sys.modules[name]
            # The import system also sets it on its parent package, in place of the stand-in.
            return importlib.import_module(fullname)


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


FINDER = DeferringFinder(DEFERRED, STAND_IN_CLASSES)


def install() -> None:
    """Defer the hub's modules in this interpreter (before anything imports jupyterhub)."""
    if FINDER not in sys.meta_path:
        sys.meta_path.insert(0, FINDER)


def main() -> int | None:
    """`opsbook-singleuser [jupyterhub-singleuser's arguments]`."""
    install()
    from jupyterhub.singleuser import main as singleuser

    return singleuser()


if __name__ == "__main__":
    sys.exit(main())
