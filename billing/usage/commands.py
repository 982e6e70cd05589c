"""CLI commands of this area, registered into `python -m billing` by billing.cli."""

from __future__ import annotations

import argparse


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], models_file: argparse.ArgumentParser
) -> None:
    """Add this area's subcommands to `commands`; `models_file` is the parent parser giving --file."""
