"""A local Azure API Management emulator: ARM management API, gateway, developer portal.

Test and demo infrastructure only; never deployed. Start it with `python -m emulators.apim`
or in-process with `emulators.apim.server.ApimEmulator`.
"""
