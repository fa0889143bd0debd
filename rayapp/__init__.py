"""rayapp: a Ray-native batch data platform (landing -> Delta lakehouse -> models -> serving stores)."""

__version__ = "0.1.0"
