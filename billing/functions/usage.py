"""Blueprint (filled in by its issue): see the module docstring once written."""

from __future__ import annotations

import azure.functions as func

bp = func.Blueprint()
