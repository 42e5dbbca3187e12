"""Host side of the clock terminal: CLI, device bundle, runner and reference servers."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
