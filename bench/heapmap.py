"""Where the heap goes, step by step, in a few seconds: `python -m bench.heapmap`.

A developer's map, not a benchmark (make bench has the figures): boots a sim terminal inside one
micropython process with a roomy heap, the way app.run does, and after each step collects and prints
the heap in use, what the step added, and the interned names (qstrs) with the bytes their pools and
text take. A module's import cost is split into its qstr bytes and the rest (function objects, class
types, dicts, constants). The qstr pools double when they fill: the pool of 640 entries is allocated
when the count passes 620, so watch the count against that line (about 7 KB on this 64-bit host).
The terminal has its device endpoint on (plain HTTP, one read token); the last steps are a client on
one kept-alive connection asking for status, then metrics, then closing it. The script's own names
(M, MODULES, PORT, TOKEN, build, go, ...) add about a dozen interned names a board does not have.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from clockterm_host import bundle  # noqa: E402
from clockterm_host.defaults import default_config  # noqa: E402
from clockterm_host.sim import free_port  # noqa: E402

TOKEN = "heapmap-read-token-0123456789"
MODULES = ("clockterm.log", "clockterm.punch", "clockterm.journal",
           "clockterm.clock", "clockterm.tz", "clockterm.roster", "clockterm.terminal", "clockterm.sntp",
           "clockterm.https", "clockterm.uplink", "clockterm.server", "clockterm.boards.norflash",
           "clockterm.boards.sim", "clockterm.app")

_SCRIPT = r"""
import gc, sys, micropython
import asyncio
_last = [0]
def M(tag):
    gc.collect()
    u = gc.mem_alloc()
    print("STEP %s %d" % (tag, u))
    micropython.qstr_info()
M("start")
import asyncio.stream
M("asyncio.stream")
for m in MODULES:
    __import__(m)
    M(m)
import clockterm
from clockterm import app
app.load_modules()  # as app.run does: also interns the names of the modules loaded later
M("load_modules")
board = app.load_board()
M("board()")
board.mount_fs()
M("mount_fs")
def build():
    # as app._build does: the config document dies with this frame
    from clockterm import config
    cfg, err = config.load(board.config_path, board.good_config_path)
    M("config.load")
    del config
    clockterm.forget("clockterm.config")
    M("config.unload")
    board.configure(cfg)
    M("board.configure")
    return app.App(board, cfg, None)
a = build()
M("App()")
async def go():
    asyncio.create_task(a.main())
    await asyncio.sleep_ms(0)
    M("app.main")
    await asyncio.sleep_ms(500)
    M("running 0.5 s")
    s = dict(a.status())
    M("status held")
    del s
    a.terminal.tap("04A1B2C3")
    M("one tap")
    # The device endpoint: a client on a kept-alive connection (its module is imported at the first
    # connection and forgotten after the last)
    r, w = await asyncio.open_connection("127.0.0.1", PORT)
    for route in (b"status", b"metrics"):
        w.write(b"GET /api/v1/%s HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n" % (route, TOKEN))
        await w.drain()
        while await r.readline() != b"\r\n":
            pass
        while True:  # the chunks, to the last (empty) one
            n = int((await r.readline()).strip(), 16)
            await r.readexactly(n + 2)
            if not n:
                break
        M("endpoint " + route.decode())
    w.s.close()  # (Stream.close() closes nothing on MicroPython)
    await asyncio.sleep_ms(300)
    M("endpoint closed")
    sys.exit(0)
asyncio.run(go())
"""


def launch(tmp: Path, script: str, head: str = "") -> tuple[list[str], dict, Path, int]:
    """(argv, env, cwd, the endpoint's port) that run `script` (this module's _SCRIPT, or a variant) on a
    sim terminal's config in tmp: its endpoint on plain HTTP with one read token (TOKEN) on a free port, a
    CA as a provisioned terminal has one (without it the uplink stays disabled and costs less). `head`
    adds settings to the script's own (MODULES, PORT, TOKEN)."""
    out = bundle.build("sim")
    cfg = default_config("sim", "heapmap-1")
    cfg["sim"]["control_port"] = free_port()
    cfg["sntp"]["servers"] = ["127.0.0.1"]
    import trustme

    trustme.CA().cert_pem.write_to_path(str(tmp / "ca.pem"))
    cfg["central"]["ca"] = str(tmp / "ca.pem")
    port = free_port()
    cfg["endpoint"].update(port=port, allow_plain_http=True, tokens=[{"name": "map", "token": TOKEN,
                                                                      "scopes": ["read"]}])
    (tmp / "config.json").write_text(json.dumps(cfg))
    argv, env = bundle.launch(out, "400K", f"MODULES = {MODULES!r}\nPORT = {port}\nTOKEN = {TOKEN.encode()!r}\n"
                              + head + script)
    env["CLOCKTERM_CONFIG"] = str(tmp / "config.json")
    env["CLOCKTERM_STATE"] = str(tmp / "state")
    return argv, env, out, port


def measure() -> list[dict]:
    argv, env, out, _ = launch(Path(tempfile.mkdtemp(prefix="heapmap-")), _SCRIPT)
    r = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=out, timeout=60)
    steps: list[dict] = []
    pending = None
    for ln in r.stdout.splitlines():
        m = re.match(r"STEP (.+) (\d+)$", ln)
        if m:
            pending = {"step": m.group(1), "used": int(m.group(2))}
            continue
        q = re.search(r"n_qstr=(\d+).*n_total_bytes=(\d+)", ln)
        if q and pending:
            pending.update(qstrs=int(q.group(1)), qstr_bytes=int(q.group(2)))
            steps.append(pending)
            pending = None
    if not steps or steps[-1]["step"] != "endpoint closed":
        raise SystemExit(f"micropython exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return steps


def main() -> int:
    steps = measure()
    base = steps[0]
    print(f"{'step':28} {'in use':>8} {'added':>7} {'of it qstr':>10} {'qstrs':>6}")
    prev = base
    for s in steps[1:]:
        added = s["used"] - prev["used"]
        qb = s["qstr_bytes"] - prev["qstr_bytes"]
        print(f"{s['step']:28} {s['used'] - base['used']:8} {added:7} {qb:10} {s['qstrs']:6}")
        prev = s
    print("(in use: bytes above the bare interpreter with its ROMFS image; pools double at 620 qstrs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
