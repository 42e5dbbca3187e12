# MicroPython side of test_esp32_ticks's test_the_fake_esp32_ticks_match_the_firmware_arithmetic: runs
# after tests/esp32time_mp.py's text (its ESP32Time) and prints, as one JSON line, what ESP32Time gives for
# each case of CASES (a setting: [op, a, b] with op "add" or "diff"), or the name of the exception it
# raises. Not collected by pytest (no test_ prefix).

import json

ESP32Time = globals().get("ESP32Time")
CASES = globals().get("CASES", [])


def main():
    t = ESP32Time()
    out = []
    for op, a, b in CASES:
        try:
            out.append(t.ticks_add(a, b) if op == "add" else t.ticks_diff(a, b))
        except (OverflowError, TypeError) as e:
            out.append(type(e).__name__)
    print(json.dumps(out))
