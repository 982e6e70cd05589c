"""Area package."""
