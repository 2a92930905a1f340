"""The method registry: every method file registers its class, like timm's ``@register_model``."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import nn

    from ssl_hub.methods.base import SSLMethod

_METHODS: dict[str, type[SSLMethod]] = {}
MethodClass = TypeVar("MethodClass", bound="type[SSLMethod]")


class UnknownMethodError(ValueError):
    """A method name that no registered method has."""


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


def register_method(cls: MethodClass) -> MethodClass:
    """Class decorator: make ``cls`` available to :func:`create_method` under ``cls.name``."""
    key = _key(cls.name)
    if key in _METHODS and _METHODS[key] is not cls:
        raise ValueError(f"Two methods register the name {cls.name!r}: {_METHODS[key]} and {cls}.")
    _METHODS[key] = cls
    return cls


def list_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    return sorted(cls.name for cls in _METHODS.values())


def get_method_class(name: str) -> type[SSLMethod]:
    """The class registered as ``name`` (case, ``-`` and ``_`` ignored)."""
    try:
        return _METHODS[_key(name)]
    except KeyError:
        close = difflib.get_close_matches(_key(name), list(_METHODS), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(_METHODS[c].name) for c in close)}?" if close else ""
        raise UnknownMethodError(
            f"Unknown method {name!r}.{hint} Available methods: {', '.join(list_methods())}."
        ) from None


def create_method(name: str, backbone: str | nn.Module, **kwargs: Any) -> SSLMethod:
    """Build a registered method around a backbone.

    Args:
        name: A name from :func:`list_methods`.
        backbone: A timm model name (``"resnet18"``, ``"hf-hub:user/repo"``, ``"local-dir:path"``) or a model.
        **kwargs: The method's hyperparameters (see its config class), plus ``backbone_kwargs`` for timm.
    """
    return get_method_class(name)(backbone, **kwargs)
