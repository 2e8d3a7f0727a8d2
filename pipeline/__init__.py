"""seg-video's pipeline: frame types, the threaded runner, video I/O, rendering, configuration and the CLI."""

__version__ = "0.1.0"
