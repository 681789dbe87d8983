"""soakd: a soak-test daemon for the Engram cognitive graph database."""

__version__ = "0.1.0"
