"""The ``sciz`` command line: one typer app, sub-commands registered by their modules."""

from __future__ import annotations

from .app import app, main

__all__ = ["app", "main"]
