"""rayapp.models."""
