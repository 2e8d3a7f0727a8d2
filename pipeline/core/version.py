"""The installed seg-video's version (one source: pyproject.toml)."""

from importlib.metadata import version

__version__ = version("seg-video")
