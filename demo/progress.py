"""A terminal progress bar with no dependency: redraws one line on a TTY, prints milestones otherwise."""

from __future__ import annotations

import sys
from typing import TextIO


class ProgressBar:
    def __init__(self, total: int, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stdout
        self.width = width
        self.done = 0
        self._tty = self.stream.isatty()
        self._last_tenth = -1

    def advance(self, count: int = 1) -> None:
        self.done = min(self.total, self.done + count)
        fraction = self.done / self.total
        if self._tty:
            filled = int(self.width * fraction)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r  {self.label:<28} [{bar}] {self.done:>7,}/{self.total:,}")
            self.stream.flush()
        elif int(fraction * 10) != self._last_tenth:
            self._last_tenth = int(fraction * 10)
            self.stream.write(f"  {self.label:<28} {self._last_tenth * 10:>3}% ({self.done:,}/{self.total:,})\n")
            self.stream.flush()

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
