"""datepin: Python package indexes as they were at a chosen moment."""

__version__ = "0.1.0"
