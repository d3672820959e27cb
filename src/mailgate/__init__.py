"""mailgate: a self-hosted email gateway and development capture server.

The public names below are imported on first use (PEP 562), not with the package:
``import mailgate.settings`` or ``mailgate.cli`` must not pay for the composition root
and everything it wires (docs/benchmarks.md, "What the idle RSS is made of").
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("mailgate")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

if TYPE_CHECKING:
    from mailgate.app import Gateway, Mode
    from mailgate.settings import Settings, load_settings

__all__ = ["Gateway", "Mode", "Settings", "__version__", "load_settings"]

#: each lazily imported public name and the module it lives in
_LAZY = {
    "Gateway": "mailgate.app",
    "Mode": "mailgate.app",
    "Settings": "mailgate.settings",
    "load_settings": "mailgate.settings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mailgate' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
