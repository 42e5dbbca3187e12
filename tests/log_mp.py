# MicroPython side of the log test (tests/test_log.py): ten error lines of 400 characters through
# clockterm.log, then the lines it kept for STATUS and its counts, as JSON on the last line.
#
# Runs under the unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml).
# No settings; the test appends a call of main(). Not collected by pytest (no test_ prefix).

import json

from clockterm import log


def main():
    for i in range(10):
        log.error("t", "%d " % i + "x" * 400)
    print(json.dumps({"kept": log.errors, "counts": log.counts}))
