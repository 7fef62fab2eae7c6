"""The auditmw command line."""

from auditmw._cli.main import main

__all__ = ["main"]
