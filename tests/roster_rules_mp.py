# MicroPython side of the roster rules test: rows written through the terminal's RosterWriter (as its
# roster pull writes them), one roster per case, each accepted or refused with the writer's reason.
#
# tests/test_roster_rules.py runs this under the unix port with the compiled bundle (linted with the
# firmware's rules, lib/ruff.toml). It prepends the settings P (the roster file to write) and CASES
# (for each case its rows, [badge, employee_id, name] lists) as assignments and appends a call of
# main(), which prints for each case "accepted" or the ValueError's text as one JSON document.
# Not collected by pytest (no test_ prefix).

import json

from clockterm.roster import RosterWriter

P = globals().get("P", "/tmp/roster_rules_mp.bin")
CASES = globals().get("CASES", [])


def main():
    out = []
    for rows in CASES:
        w = RosterWriter(P)
        try:
            for r in rows:
                w.add(*r)
            w.commit()
            out.append("accepted")
        except ValueError as e:
            out.append(str(e))
    print(json.dumps(out))
