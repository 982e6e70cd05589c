"""Running the app: what an operator runs and the housekeeping timers (retention)."""
