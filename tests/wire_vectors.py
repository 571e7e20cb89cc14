"""Where the wire vectors live: $PYWSL_WIRE_VECTORS (further examples), else the copy in tests/data/wire."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data" / "wire"


def load_vectors(filename: str) -> Any:
    """Parse one of the vector files; a missing file is an error, never a skipped test."""
    folder = Path(os.environ.get("PYWSL_WIRE_VECTORS") or DATA)
    return json.loads((folder / filename).read_text())
