"""The employee card (docs/employee-card.md) shows what the terminal really shows.

Its pictures are made by `make card` from the frames the SSD1306 driver sends while the real tap path
and idle display run on the unix port (tools/clockterm_host/card_mp.py): a change to a text, the
layout or the driver makes them stale, and this test says so. The card's sounds are the ESP32
indicator's beep patterns.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from clockterm_host import card

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "employee-card.md"


def test_card_pictures_are_what_the_terminal_shows() -> None:
    assert card.main([str(REPO / "docs" / "card"), "--check"]) == 0, "run make card"
    pictures = set(re.findall(r"\(card/([\w-]+\.png)\)", DOC.read_text()))
    assert pictures == {p.name for p in (REPO / "docs" / "card").glob("*.png")}


def test_frame_pixels_follow_the_driver_layout() -> None:
    # MONO_VLSB pages in horizontal addressing: pixel (x, y) is bit y % 8 of byte (y // 8) * 128 + x.
    frame = bytearray(1024)
    frame[1 * 128 + 3] = 1 << 2
    frame[7 * 128 + 127] = 0x80
    lit = card.pixels(bytes(frame))
    assert [(x, y) for y in range(64) for x in range(128) if lit[y][x]] == [(3, 10), (127, 63)]
    assert card.png(bytes(frame)).startswith(b"\x89PNG\r\n\x1a\n")


def test_card_sounds_are_the_indicators() -> None:
    src = (REPO / "lib" / "clockterm" / "boards" / "esp32.py").read_text()
    beeps = None
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "_BEEPS":
            beeps = ast.literal_eval(node.value)
    # What the card says for each feedback code, and the pattern it describes (Hz, ms; 0 Hz: silence).
    said = {"ok": ("one short high beep", ((2700, 80),)),
            "dup": ("two short high beeps", ((2700, 40), (0, 60), (2700, 40))),
            "deny": ("one long low buzz", ((900, 400),)),
            "error": ("three low beeps", ((900, 150), (0, 100), (900, 150), (0, 100), (900, 150)))}
    assert beeps == {code: sum(pattern, ()) for code, (_, pattern) in said.items()}  # flat: Hz, ms, Hz, ms ...
    text = DOC.read_text()
    for words, _ in said.values():
        assert words in text
