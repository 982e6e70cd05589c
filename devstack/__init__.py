"""Local development stack: start and stop the services the app uses, on loopback.

Used by the tests, `make run` and `make demo`. Never deployed.
"""
