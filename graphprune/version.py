"""The version, in a module of its own: the package re-exports it, the CLI and plans read it."""

__version__ = "0.1.0"
