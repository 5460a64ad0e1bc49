"""A timm-style model registry: ``@register_model``, ``create_model(name, **kwargs)``, ``list_models()``.

Entries are callables (classes or factory functions) that take keyword arguments and return an ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from torch import nn

F = TypeVar("F", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


@overload
def register_model(fn: F) -> F: ...
@overload
def register_model(fn: str) -> Callable[[F], F]: ...


def register_model(fn: F | str) -> F | Callable[[F], F]:
    """Register a model constructor.

    ``@register_model`` registers under the callable's ``__name__``; ``@register_model("shared")`` under the given
    name. Registering a name twice is an error (it would silently shadow a model).
    """

    def add(name: str, builder: F) -> F:
        old = _REGISTRY.get(name)
        # the same definition may register again (a module reload); a different one would shadow a model
        if old is not None and (old.__module__, old.__qualname__) != (builder.__module__, builder.__qualname__):
            raise ValueError(f"model name {name!r} is already registered (by {old.__module__}.{old.__qualname__})")
        _REGISTRY[name] = builder
        return builder

    if isinstance(fn, str):
        name = fn
        return lambda builder: add(name, builder)
    return add(fn.__name__, fn)


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with ``kwargs``; an unknown name raises ValueError listing valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models()) or '(none registered)'}")
    return _REGISTRY[name](**kwargs)
