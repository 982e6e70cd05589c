"""Local emulators of external services, for tests and the demo (never deployed)."""
