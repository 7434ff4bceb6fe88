"""What build this is: the installed distribution's version, read cheaply (``--version`` imports nothing else)."""

from __future__ import annotations

from importlib import metadata


def version() -> str:
    """The installed salesplan version (``0+unknown`` when run from a bare source tree)."""
    try:
        return metadata.version("salesplan")
    except metadata.PackageNotFoundError:
        return "0+unknown"
