"""Callables as static arguments of ``jax.jit``, hashed by identity."""

from __future__ import annotations

import inspect

__all__ = ["by_identity"]


class _ByIdentity:
    """A callable that hashes and compares by the identity of the wrapped function.

    ``jax.jit`` hashes static arguments; an Equinox module or a dataclass holding
    arrays is not hashable, and a callable with a value-based ``__eq__`` could make
    two different score functions share a compiled program. Identity is what a
    compiled run depends on. The jit cache keeps the wrapper (and so the function)
    alive, so an ``id`` is never reused while its entry exists.
    """

    __slots__ = ("fn", "__weakref__")

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __getattr__(self, name):
        # Attributes the kernel reads (e.g. ``time_dependent``) come from the function.
        if name == "fn":
            raise AttributeError(name)
        return getattr(self.fn, name)

    def _key(self):
        # ``problem.loglikelihood_fn`` makes a new bound-method object at every
        # access: identify it by its instance and function, or every call would
        # compile again.
        fn = self.fn
        if inspect.ismethod(fn):
            return (id(fn.__self__), id(fn.__func__))
        return (id(fn),)

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, _ByIdentity) and other._key() == self._key()


def by_identity(fn):
    """Wrap ``fn`` for use as a static jit argument (idempotent)."""
    return fn if isinstance(fn, _ByIdentity) else _ByIdentity(fn)
