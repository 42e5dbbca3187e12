"""`clockterm check --url`: the status document of a real sim terminal, served as the device endpoint
serves it (GET /api/v1/status with a bearer token; the endpoint itself is built beside this work, so a
small stand-in serves the terminal's own STATUS document here), and what the screen calls for attention."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from clockterm_host import check
from clockterm_host.defaults import default_config
from clockterm_host.runner import Terminal
from clockterm_host.sim import free_port

CLI = str(Path(sys.executable).parent / "clockterm")
TOKEN = "read-token-0123456789abcdef"


@pytest.fixture(scope="module")
def status_doc(tmp_path_factory):
    d = tmp_path_factory.mktemp("st")
    cfg = default_config("sim")
    cfg["sim"]["control_port"] = free_port()
    cfg["sntp"]["port"] = free_port()  # no server there: the clock stays unsynced
    (d / "config.json").write_text(json.dumps(cfg))
    t = Terminal(d / "config.json", d / "state").start()
    try:
        assert t.tap("04A1B2C3").startswith("OK 1 ")
        return t.status()
    finally:
        t.stop()


def _serve(doc: dict):
    class H(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server name
            ok = self.path == "/api/v1/status" and self.headers.get("Authorization") == f"Bearer {TOKEN}"
            body = json.dumps(doc if ok else {"error": "invalid_token"}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_check_url_shows_the_status_and_what_needs_attention(status_doc, tmp_path):
    srv = _serve(status_doc)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        r = subprocess.run([CLI, "check", "--url", url, "--token-file", "-"], input=TOKEN + "\n",
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stdout + r.stderr  # unsynced, one punch unsent: attention
        assert "terminal   term-001 on sim, firmware 0.1.0" in r.stdout
        assert "clock      UNSYNCED" in r.stdout and "attention  clock unsynced" in r.stdout
        # no CA beside the config (the sim board reads a relative central.ca beside its config file)
        assert re.search(r"uplink: central: \[Errno 2\] ENOENT \(/\S+/central/ca\.pem\)", r.stdout), r.stdout
        assert "journal    " in r.stdout and "last seq 1, 1 unsent" in r.stdout
        r = subprocess.run([CLI, "check", "--url", url, "--token-file", "-"], input="wrong\n",
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "answered 401 (token refused)" in r.stderr
    finally:
        srv.shutdown()
    r = subprocess.run([CLI, "check", "--url", url, "--token-file", "-"], input=TOKEN + "\n",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no status" in r.stderr


def test_a_healthy_document_calls_for_nothing(status_doc):
    doc = json.loads(json.dumps(status_doc))
    doc["clock"].update(quality="synced", synced=True, offset_ms=0.4, last_sync=doc["clock"]["utc_ms"] - 5000,
                        server="ntp1")
    doc["uplink"]["last_error"] = None  # the sim terminal had no central (nor its CA): said, see above
    lines, bad = check.render(doc, now_ms=doc["clock"]["utc_ms"])
    assert bad == [], lines
    assert "clock      SYNCED, offset +0.4 ms, last sync 5 s ago from ntp1, drift +0.0 ppm" in lines
    assert lines[-1] == "attention  none: the terminal is healthy"


@pytest.mark.parametrize("change, said", [
    (lambda d: d.update(config_error="sntp.port: expected int"), "config refused"),
    (lambda d: d["uplink"].update(last_error="HTTP 401"), "uplink: HTTP 401"),
    (lambda d: d["journal"].update(warnings=["memory 90%"]), "journal: memory 90%"),
    (lambda d: d["link"].update(up=False), "network link down"),
    (lambda d: d["tasks"]["uplink"].update(alive=False), "tasks down: uplink"),
    (lambda d: d["roster"].update(error="bad file"), "roster: bad file"),
    (lambda d: d["uplink"].update(refused=2), '2 punches refused by the central, kept aside (docs/uplink.md, '
                                              '"Refused punches")'),
])
def test_each_fault_is_named(status_doc, change, said):
    doc = json.loads(json.dumps(status_doc))
    doc["clock"]["quality"] = "synced"
    doc["uplink"]["last_error"] = None
    change(doc)
    _lines, bad = check.render(doc)
    assert bad == [said]


def test_safe_mode_from_flash_with_no_app_running():
    lines, bad = check.render(None, {"crashes": 3, "crash_limit": 3, "safe_pin_held": False, "safe_mode": True,
                                     "config_error": None, "journal": {"pending": 0}})
    assert "crashes    3 in a row (safe mode at 3), SAFE MODE: crash loop" in lines
    assert bad == ["the terminal app is not running", "safe mode (clockterm recover leave-safe-mode)"]


def test_the_code_a_terminal_runs_is_named_and_compared_with_the_checkout(status_doc):
    """A sim terminal runs its code from ROMFS: its document names no frozen code (under make frozen-test,
    the interpreter's: lib/'s id). One whose image carries code names its id, which the check compares with
    this checkout's lib/ (not a fault either way: a terminal may run an older release)."""
    import os

    from clockterm_host import bundle

    doc = json.loads(json.dumps(status_doc))
    assert doc["code"] == (bundle.code_id() if os.environ.get("CLOCKTERM_FROZEN") else None)
    doc["code"] = None
    lines, _ = check.render(doc)
    assert ", code " not in lines[0]
    doc["code"] = bundle.code_id()
    lines, bad = check.render(doc)
    assert f", code {bundle.code_id()} (this repository's lib/)," in lines[0], lines[0]
    doc["code"] = "feedfacecafe"
    lines, bad2 = check.render(doc)
    assert f", code feedfacecafe (lib/ here: {bundle.code_id()})," in lines[0], lines[0]
    assert bad == bad2


def test_a_board_just_flashed_says_that_nothing_is_deployed():
    """A terminal's image with nothing beside it yet (no board.json: the app cannot start): the check
    names the code the image carries and what to do, and calls for attention."""
    from clockterm_host import bundle

    lines, bad = check.render(None, None, {"deployed": False, "code": "the image (frozen)",
                                           "code_id": bundle.code_id(), "micropython": "1.29.0"})
    assert lines[0] == ("app        not running (MicroPython 1.29.0, code from the image (frozen), "
                        f"code {bundle.code_id()} (this repository's lib/))"), lines
    assert "deploy     nothing deployed: no /board.json (clockterm deploy writes it)" in lines
    assert bad == ["the terminal app is not running", "not deployed"]
