"""renewald: delivers renewal jobs from the conversation tracker's artifact.db."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("renewald")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
