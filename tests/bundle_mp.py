# MicroPython side of test_bundle's import check: every module named in MODS imports on the unix port
# (no machine, no network there), or what it raised.
#
# tests/test_bundle.py runs this under the unix port with the compiled bundle (linted with the
# firmware's rules, lib/ruff.toml). It prepends the setting MODS (dotted module names) as an assignment
# and appends a call of main(), which prints {module: "ok" or the exception's repr} as one JSON
# document. Not collected by pytest (no test_ prefix).

import json

MODS = globals().get("MODS", [])


def main():
    out = {}
    for m in MODS:
        try:
            __import__(m)
            out[m] = "ok"
        except Exception as e:
            out[m] = repr(e)
    print(json.dumps(out))
