# MicroPython side of the time zone names test: the device's own tz.py gives the UTC offset of each
# POSIX rule at the instants the host's zoneinfo was asked about.
#
# tests/test_tznames.py runs this under the unix port with the compiled bundle (linted with the
# firmware's rules, lib/ruff.toml), with no settings: argv[1] names a file of JSON lines [rule,
# [instant, ...]] (Unix seconds), and a call of main() is appended, which prints a JSON line [rule,
# [offset in seconds, ...]] for each. Not collected by pytest (no test_ prefix).

import json
import sys

from clockterm import tz


def main():
    for line in open(sys.argv[1]):
        rule, pts = json.loads(line)
        z = tz.TZ(rule)
        print(json.dumps([rule, [z.offset_s(t) for t in pts]]))
