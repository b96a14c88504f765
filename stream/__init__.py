"""The colorize runtime: configuration, message framing and transport, stage processes, supervisor, CLI."""

__version__ = "0.1.0"
