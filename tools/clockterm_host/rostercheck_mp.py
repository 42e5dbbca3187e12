# The roster rules, run by the host on the MicroPython unix port: the device's own code decides.
#
# Not CPython: clockterm_host.roster runs this file under `micropython` with the compiled bundle
# (bundle.launch), the way `clockterm config --check` runs the config validator. Two jobs, each
# streaming a file of JSON lines so that a roster of any size passes through a small heap:
#   rows SRC            SRC: [line, badge, employee_id, name]; prints per row [line, badge, employee_id,
#                       name] as the terminal stores them (roster_file.check_row), or [line, null,
#                       the rule it breaks].
#   write SRC SCRATCH   SRC: [badge, employee_id, name] sorted by badge; writes them through the
#                       terminal's RosterWriter into SCRATCH (order, duplicates, the badge limit, the
#                       file's own check); prints {"count": n} or {"row": n, "error": message}.

import json
import sys

from clockterm import roster_file


def rows(src):
    with open(src) as f:
        for text in f:
            line, badge, employee, name = json.loads(text)
            try:
                b, e, n = roster_file.check_row(badge, employee, name)
                print(json.dumps([line, b, e, n]))
            except ValueError as ex:
                print(json.dumps([line, None, str(ex)]))


def write(src, scratch):
    w = roster_file.RosterWriter(scratch)
    try:
        with open(src) as f:
            for text in f:
                b, e, n = json.loads(text)
                w.add(b, e, n)
        w.commit()
    except ValueError as ex:
        msg = str(ex)
        if msg.startswith("row "):  # "row N: ...": the caller names the row by its own numbering
            msg = msg.split(": ", 1)[1]
        print(json.dumps({"row": w.count + 1, "error": msg}))
        return
    print(json.dumps({"count": w.count}))


if sys.argv[1] == "rows":
    rows(sys.argv[2])
else:
    write(sys.argv[2], sys.argv[3])
