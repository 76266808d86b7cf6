"""The version of sciz, kept in one place."""

__version__ = "0.1.0"
