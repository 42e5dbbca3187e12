"""The interned-name (qstr) pool is final once a terminal is up, with room left before it doubles.

A new qstr pool is one block twice the size of the last (about 7 KB on this host at 620 names). The
terminal interns the names of the modules it loads only now and then at boot (app.load_modules), so
that the pool never grows in the middle of a request on a fragmented heap (docs/heap.md, "Interned
names"). This boots a sim terminal in one micropython process as app.run does (endpoint on, uplink
with a CA: every module it can load), and checks that loading those modules again interns nothing
new and that ROOM names still fit. A change that fails here adds names past the budget: use names the
firmware already interns, or fewer, or budget the next pool."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import trustme
from mp import device_dir, run_mp, script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from clockterm_host.defaults import default_config  # noqa: E402
from clockterm_host.sim import free_port  # noqa: E402

ROOM = 16  # names left after boot (besides the ~8 this test's script interns): for the few a terminal interns
#           at run time, and a margin


def test_interned_names_final_at_boot_with_room(tmp_path: Path) -> None:
    cfg = default_config("sim", "qstr-001")
    cfg["sim"]["control_port"] = free_port()
    cfg["sntp"]["servers"] = ["127.0.0.1"]
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cfg["central"]["ca"] = str(tmp_path / "ca.pem")
    cfg["endpoint"].update(port=free_port(), allow_plain_http=True,
                           tokens=[{"name": "t", "token": "qstr-room-token-0123456789", "scopes": ["read"]}])
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = run_mp(script("qstr_room_mp.py", tail="main()"), heap="400K", timeout=60, cwd=str(device_dir()),
               env={"CLOCKTERM_CONFIG": str(tmp_path / "config.json"), "CLOCKTERM_STATE": str(tmp_path / "state")})
    counts = {}
    tag = None
    for ln in r.stdout.splitlines():
        if ln.startswith("STEP "):
            tag = ln[5:]
        m = re.search(r"n_qstr=(\d+)", ln)
        if m and tag:
            counts[tag] = int(m.group(1))
    room = json.loads(r.stdout.strip().splitlines()[-1])["room"]
    print(f"qstrs: {counts}, room before the next pool: {room}")
    assert counts["later"] == counts["up"], f"modules loaded later intern {counts['later'] - counts['up']} new names"
    assert room >= ROOM, f"{room} names left before the qstr pool doubles (want {ROOM}): {counts}"
