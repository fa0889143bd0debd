"""Demo, benchmark and data generator: built on the library, never imported by it."""
