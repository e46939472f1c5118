"""syncd: the follow-up daemon."""
__version__ = "0.1.0"
