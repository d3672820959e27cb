"""mailgate: a self-hosted email gateway and development capture server."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mailgate")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

from mailgate.app import Gateway, Mode
from mailgate.settings import Settings, load_settings

__all__ = ["Gateway", "Mode", "Settings", "__version__", "load_settings"]
