"""`opsbook-singleuser`: jupyterhub-singleuser, started without the hub's database layer.

The engineer's container runs this instead of `jupyterhub-singleuser`, with the same arguments;
it runs that same server, unchanged. Why: jupyterhub-singleuser imports `jupyterhub.log`, which
imports the hub's page handlers, and with them `jupyterhub.orm`: SQLAlchemy (its core and its
ORM) and Alembic. In the singleuser image, at one CPU, that was 0.3 s of every server start for
code that only the hub runs; it was most of what made a spawn slower than `docker run` of the
same image (tests/bench/notes.md). The upstream fix is for JupyterHub to import them where it
uses them.

How, in two ways:
- `jupyterhub.orm`, `jupyterhub.roles` and `jupyterhub.handlers` (and its `pages`) are imported
  as stand-ins, `Deferred` modules that import the real module at the first use of any of their
  attributes and hand it over. The one name taken from them at import time, `from
  .handlers.pages import HealthCheckHandler` (the request log lowers health checks to debug), is
  a stand-in class that no object is an instance of while the real handlers are not loaded (none
  can be), and that asks the real class once they are.
- Two modules the server does use import SQLAlchemy for the hub's sake: `jupyterhub.scopes` the
  package (for its queries), `jupyterhub.utils` its base error (for a decorator of the hub's
  app). Each is lent a `Lent` module of its own: a stand-in exception class, and the real module
  at the first use of anything else. When SQLAlchemy is loaded, their globals get the real
  module and class, so an `except` clause catches the real error. SQLAlchemy itself is never
  touched: replacing its package broke its own circular imports (tests/bench/notes.md).
A single-user server never uses any of it, so none of it loads; anything that does use it gets
the real thing, only later. Nothing else changes. A JupyterHub upgrade that starts using these
modules at import time loads them as before, only as slowly as before;
tests/unit/opsbook/test_opsbook_singleuser.py fails then, saying which.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any

# The hub's own modules that a single-user server imports but never uses.
DEFERRED = (
    "jupyterhub.orm",
    "jupyterhub.roles",
    "jupyterhub.handlers",
    "jupyterhub.handlers.pages",
)
# What comes with the deferred modules and only with them: the tests check it stays out.
KEPT_OUT = (
    "alembic",
    "sqlalchemy",
    "sqlalchemy.orm",
    "jupyterhub.objects",
    "jupyterhub.handlers.base",
)
# Names read from a deferred module while others are imported: module -> class names.
STAND_IN_CLASSES = {"jupyterhub.handlers.pages": ("HealthCheckHandler",)}
# Modules the server needs that import SQLAlchemy, which only the hub uses (its core is 0.09 s
# of a start): importer -> (the module it imports, the exception classes it takes from it).
# jupyterhub.utils takes SQLAlchemy's base error for `catch_db_error`, a decorator of the hub's
# app; jupyterhub.scopes imports the package for its database queries.
BORROWED = {
    "jupyterhub.utils": ("sqlalchemy.exc", ("SQLAlchemyError",)),
    "jupyterhub.scopes": ("sqlalchemy", ()),
}


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


class Lent(types.ModuleType):
    """What one importer gets for a module in place of the real one: its exception classes are
    stand-ins (an `except` clause names them at import time); any other attribute read imports
    the real module and hands it over."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(importlib.import_module(self.__name__), name)


class BorrowingFinder(importlib.abc.MetaPathFinder):
    """Gives each importer of `borrowed` a Lent module while the real one is not loaded; when
    it is, the importer's globals get the real module and the real classes.

    A stand-in exception class is one no code raises: nothing can raise the real class before
    its module is loaded. Rebinding the importer's globals then makes its `except` clauses catch
    the real class, which an instance check alone could not (`except` asks no metaclass)."""

    def __init__(self, borrowed: dict[str, tuple[str, Sequence[str]]]) -> None:
        self.borrowed = borrowed
        self.lenders: dict[str, list[str]] = {}
        for importer, (module, _) in borrowed.items():
            self.lenders.setdefault(module, []).append(importer)
        self.lent: dict[str, Lent] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.borrowed and fullname not in self.lenders:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            if fullname in self.borrowed:
                spec.loader = _Hooked(spec.loader, before=self._lend)
            else:
                spec.loader = _Hooked(spec.loader, after=self._give_back)
        return spec

    def _lend(self, importer: types.ModuleType) -> None:
        """Before the importer runs: its `import` statements get the Lent module."""
        module, classes = self.borrowed[importer.__name__]
        lent = self.lent[importer.__name__] = Lent(module)
        for name in classes:
            setattr(lent, name, _StandInClass(name, (Exception,), {"__module__": module}))

        def borrowing_import(
            name: str,
            globals: dict[str, Any] | None = None,
            locals: dict[str, Any] | None = None,
            fromlist: Sequence[str] | None = (),
            level: int = 0,
        ) -> types.ModuleType:
            # `from <module> import ...` or `import <module> [as x]` (a package), while it is
            # not loaded; `import a.b` binds `a`, so it is not lent.
            lend = name == module and level == 0 and (fromlist or "." not in name)
            if lend and module not in sys.modules:
                return lent
            return builtins.__import__(name, globals, locals, fromlist, level)

        importer.__builtins__ = {**builtins.__dict__, "__import__": borrowing_import}

    def _give_back(self, real: types.ModuleType) -> None:
        """After the real module ran: the importer's globals that held what was lent hold the
        real module and classes."""
        for importer_name in self.lenders[real.__name__]:
            importer, lent = sys.modules.get(importer_name), self.lent.get(importer_name)
            if importer is None or lent is None:
                continue
            for name, value in list(vars(importer).items()):
                if value is lent:
                    setattr(importer, name, real)
                elif vars(lent).get(getattr(value, "__name__", "")) is value:  # a stand-in class
                    setattr(importer, name, getattr(real, value.__name__))


class _Hooked(importlib.abc.Loader):
    """A module's own loader, with `before(module)` and `after(module)` around its run."""

    def __init__(
        self,
        loader: Any,
        before: Callable[[types.ModuleType], None] | None = None,
        after: Callable[[types.ModuleType], None] | None = None,
    ) -> None:
        self.loader = loader
        self.before = before
        self.after = after

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        if self.before is not None:
            self.before(module)
        self.loader.exec_module(module)
        if self.after is not None:
            self.after(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)  # get_source for tracebacks, and the rest


FINDER = DeferringFinder(DEFERRED, STAND_IN_CLASSES)
BORROWER = BorrowingFinder(BORROWED)


def install() -> None:
    """Defer the hub's modules in this interpreter (before anything imports jupyterhub)."""
    for finder in (BORROWER, FINDER):
        if finder not in sys.meta_path:
            sys.meta_path.insert(0, finder)


def main() -> int | None:
    """`opsbook-singleuser [jupyterhub-singleuser's arguments]`."""
    install()
    from jupyterhub.singleuser import main as singleuser

    return singleuser()


if __name__ == "__main__":
    sys.exit(main())
