"""A stateful local Stripe emulator that the real `stripe` SDK talks to over HTTP."""
