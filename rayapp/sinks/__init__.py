"""rayapp.sinks."""
