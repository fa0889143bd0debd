"""rayapp.transforms."""
