"""`clockterm check`: a deployed terminal's health on one screen, over its serial port or its endpoint.

Over serial (`--port`) the running app holds the REPL, so the check stops it with Ctrl-C (the terminal
takes no taps for the few seconds the check lasts), reads the stopped app's status document (kept by
app.run as `clockterm.app.last`: the live figures of the moment it stopped), the crash count, the
configs and the journal from flash (lib/clockterm/recover.py), then resets the board, which starts the
terminal again. Over the network (`--url`) it asks the device endpoint's `GET /api/v1/status` with a
read token (`--token-file`) and disturbs nothing. The exit code is 0 when nothing needs attention, 1
when something does (listed under "attention"), 2 when the terminal could not be asked.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from . import bundle
from .device import CODE_DIR, DeviceError, Session

_SERIAL_SCRIPT = """
import json, sys, gc
gc.collect()
doc = {'micropython': '.'.join(str(x) for x in sys.implementation.version[:3]), 'code': None, 'status': None}
""" + CODE_DIR + """
try:
    os.stat('/board.json')
    doc['deployed'] = True
except OSError:
    doc['deployed'] = False
if _code.startswith('!'):
    doc['code_error'] = _code[1:]
else:
    doc['code'] = _code
doc['code_id'] = _id
if _a is not None and _a.last is not None:
    doc['status'] = dict(_a.last.status())
print(json.dumps(doc))
"""


def _ago(ms: int | None, now_ms: int) -> str:
    if not ms:
        return "never"
    s = max(0, (now_ms - ms) // 1000)
    return f"{s} s ago" if s < 120 else f"{s // 60} min ago" if s < 7200 else f"{s // 3600} h ago"


def render(st: dict | None, flash: dict | None = None, where: dict | None = None,
           now_ms: int | None = None) -> tuple[list[str], list[str]]:
    """The check's lines and what needs attention, from a status document and/or the flash state."""
    now_ms = now_ms or int(time.time() * 1000)
    lines, bad = [], []
    where = where or {}
    # (over the network the status document names the frozen code; over serial the board is asked too)
    code = ((f", MicroPython {where['micropython']}" if where.get("micropython") else "")
            + (f", code from {where['code']}" if where.get("code") else "")
            + _code_id(where.get("code_id") or (st or {}).get("code")))
    if st is None:
        lines.append("app        not running" + (f" ({where['code_error']})" if where.get("code_error") else "")
                     + (f" ({code[2:]})" if code else ""))
        bad.append("the terminal app is not running")
    else:
        lines.append(f"terminal   {st.get('device_id')} on {st.get('board')}, firmware {st.get('firmware')}"
                     + code + f", up {st.get('uptime_s', 0)} s"
                     + (f" (its code now: {where['code_error']})" if where.get("code_error") else ""))
        lines += _live(st, now_ms, bad)
    if where.get("deployed") is False:
        lines.append("deploy     nothing deployed: no /board.json (clockterm deploy writes it)")
        bad.append("not deployed")
    if flash:
        lines += _flash(flash, bad)
    lines.append("attention  " + ("; ".join(bad) if bad else "none: the terminal is healthy"))
    return lines, bad


def _code_id(frozen_id: str | None) -> str:
    # The id of the code frozen into the image, and whether it is this repository's (a board that runs an
    # older release is not unhealthy: the line says it, the attention list does not)
    if not frozen_id:
        return ""
    mine = bundle.code_id()
    return f", code {frozen_id}" + (" (this repository's lib/)" if frozen_id == mine else f" (lib/ here: {mine})")


def _live(st: dict, now_ms: int, bad: list[str]) -> list[str]:
    out = []
    err = st.get("config_error")
    out.append(f"config     {'REFUSED, last good in force: ' + err if err else 'ok'}"
               + (" (a central update waits for a reboot)" if st.get("config_pending") else ""))
    if err:
        bad.append("config refused")
    c = st.get("clock", {})
    q = c.get("quality", "?")
    off = c.get("offset_ms")
    out.append(f"clock      {q.upper()}" + (f", offset {off:+.1f} ms" if isinstance(off, (int, float)) else "")
               + f", last sync {_ago(c.get('last_sync'), now_ms)} from {c.get('server') or '-'}"
               + f", drift {c.get('drift_ppm', 0):+.1f} ppm")
    if q != "synced":
        bad.append(f"clock {q}")
    j = st.get("journal", {})
    out.append(f"journal    {j.get('journal_id')}: last seq {j.get('last_seq')}, {j.get('pending')} unsent, "
               f"{j.get('fill_pct')}% full ({j.get('full_policy')})"
               + (f", warnings: {', '.join(j['warnings'])}" if j.get("warnings") else ""))
    if j.get("warnings"):
        bad.append("journal: " + ", ".join(j["warnings"]))
    u = st.get("uplink", {})
    out.append(f"uplink     {u.get('state')}, last ok {_ago(u.get('last_ok'), now_ms)}, backlog {u.get('backlog')}"
               + (f", {u['refused']} refused by the central, kept aside" if u.get("refused") else "")
               + (f", last error: {u['last_error']}" if u.get("last_error") else ""))
    if u.get("last_error"):
        bad.append("uplink: " + str(u["last_error"]))
    if u.get("refused"):  # (docs/uplink.md, "Refused punches"; the endpoint's health names each)
        bad.append(f"{u['refused']} punches refused by the central, kept aside (docs/uplink.md, \"Refused punches\")")
    r = st.get("roster", {})
    out.append(f"roster     {r.get('badges')} badges" + (f", error: {r['error']}" if r.get("error") else ""))
    if r.get("error"):
        bad.append("roster: " + str(r["error"]))
    ln = st.get("link", {})
    out.append(f"link       {ln.get('type')} {'up' if ln.get('up') else 'DOWN'}"
               + (f" {ln['ip']}" if ln.get("ip") else "")
               + (f", last error: {ln['last_error']}" if ln.get("last_error") else ""))
    if not ln.get("up"):
        bad.append("network link down")
    h = st.get("heap", {})
    out.append(f"heap       free {h.get('free')} B, largest block {h.get('max_block')} B, "
               f"loop stall max {st.get('loop', {}).get('stall_ms_max')} ms")
    tasks = st.get("tasks", {})
    restarted = [f"{n} x{t['restarts']}" for n, t in tasks.items() if t.get("restarts")]
    dead = [n for n, t in tasks.items() if not t.get("alive")]
    out.append(f"tasks      {len(tasks)} running" + (f", restarted: {', '.join(restarted)}" if restarted else ""))
    if dead:
        bad.append("tasks down: " + ", ".join(dead))
    for e in st.get("errors", [])[-3:]:
        out.append(f"error      {e}")
    return out


def _flash(f: dict, bad: list[str]) -> list[str]:
    out = [f"crashes    {f['crashes']} in a row (safe mode at {f['crash_limit']})"
           + (", SAFE MODE: " + ("safe-mode pin held" if f["safe_pin_held"] else "crash loop") if f["safe_mode"]
              else "")]
    if f["safe_mode"]:
        bad.append("safe mode (clockterm recover leave-safe-mode)")
    elif f["crashes"]:
        bad.append(f"{f['crashes']} crashes since the last healthy run")
    if f.get("config_error"):
        out.append(f"config     on flash: {f['config_error']}")
        bad.append("config on flash refused")
    j = f.get("journal", {})
    if "error" in j:
        out.append(f"journal    {j['error']}")
        bad.append("journal: " + j["error"])
    return out


def check_serial(port: str, restart: bool = True) -> tuple[dict | None, dict | None, dict]:
    s = Session(port)
    ok = False
    try:
        where = s.json(_SERIAL_SCRIPT)
        flash = None
        if where["deployed"]:  # (the flash state needs the board's wiring: a board just flashed has none)
            out = s.exec("import clockterm.recover as _r\n_r.status()\n", timeout=60)
            flash = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
        ok = True
    finally:
        if restart and ok:
            s.restart()
        else:
            s.close()
    return where.pop("status"), flash, where


def check_url(url: str, token: str, ca: str | None = None) -> dict:
    """The status document from the device endpoint (HTTPS verified against ca, or the system's CAs)."""
    import ssl

    req = Request(url.rstrip("/") + "/api/v1/status", headers={"Authorization": f"Bearer {token}"})
    try:
        context = ssl.create_default_context(cafile=ca) if url.startswith("https:") else None
        with urlopen(req, timeout=10, context=context) as r:
            return json.loads(r.read())
    except HTTPError as e:
        why = "token refused" if e.code in (401, 403) else e.reason
        raise DeviceError(f"{url}: the endpoint answered {e.code} ({why})") from None
    except (URLError, OSError, ValueError) as e:
        raise DeviceError(f"{url}: no status ({e})") from None


def cmd_check(a: argparse.Namespace) -> int:
    try:
        if a.port:
            st, flash, where = check_serial(a.port, not a.no_restart)
        else:
            from .provision import read_secret

            st, flash, where = check_url(a.url, read_secret("token", a.token_file), a.ca), None, {}
    except DeviceError as e:
        print(f"check: {e}", file=sys.stderr)
        return 2
    lines, bad = render(st, flash, where)
    if a.json:  # the documents as read ("flash": null when nothing is deployed), and what needs attention
        print(json.dumps({"status": st, "flash": flash, "where": where, "attention": bad}, indent=1))
        return 1 if bad else 0
    print("\n".join(lines))
    if a.port and not a.no_restart:
        print("(the terminal was stopped for the check and restarts now)")
    return 1 if bad else 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("check", help="a deployed terminal's health on one screen (serial port or endpoint)")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port: stops the app for a few seconds, then restarts it")
    where.add_argument("--url", help="the device endpoint, e.g. http://10.0.0.7:8080 (needs --token-file)")
    s.add_argument("--token-file", help="with --url: file with a read token (- for stdin)")
    s.add_argument("--ca", help="with an https --url: the CA that signed the endpoint's certificate (PEM)")
    s.add_argument("--json", action="store_true", help="the documents as JSON instead of the screen")
    s.add_argument("--no-restart", action="store_true", help="with --port: leave the board at its REPL")
    s.set_defaults(func=cmd_check)

