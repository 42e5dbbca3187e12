"""Issue 6, the config pull end to end: a sim terminal and the reference central. An overlay set at the
central (duplicate window, time zone) is pulled, waits for a reboot (STATUS config_pending), and holds
after a kill -9 and restart; a bad overlay at the central (a device_id override, a wrong type) is
refused and the terminal keeps running with the old one; a 304 rewrites nothing; an overlay on flash
that no longer validates boots the local config alone, with the reason in STATUS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import e2e
import mp
from clockterm_host.central import Handle
from clockterm_host.sntp_server import SntpServer

OVERLAY = {"tz": "JST-9", "terminal": {"duplicate_window_s": 3600}}


def flash_file(state: Path, name: str, write: str | None = None) -> dict[str, Any] | None:
    """Read (or first write) a file in a stopped sim terminal's LittleFS image, with the device's own
    filesystem (tests/fsimage_mp.py): {"text", "mtime"} or None when it does not exist."""
    fs_kb = mp.bundle.board_config("sim")["flash"]["fs_kb"]
    settings = {"OP": "read", "IMAGE": str(state / "fs.bin"), "BLOCKS": fs_kb * 1024 // 4096, "NAME": name,
                "WRITE": write}
    out = mp.mp_json(mp.script("fsimage_mp.py", settings, "main()"))
    assert out is None or isinstance(out, dict)
    return out


def set_overlay(central: Handle, overlay: Any) -> None:
    assert central.admin(f"/config/{e2e.DEVICE}", overlay) == {"ok": True}


def config_checked(term: Any) -> dict[str, Any]:
    """STATUS once the uplink has had the central's answer to its config pull (200 or 304)."""
    return e2e.wait_for(lambda: (lambda st: st if st["uplink"]["config_checks"] >= 1 else None)(term.status()),
                        30, "the terminal's config pull")


def double_tap(term: Any, badge: str) -> tuple[str, str]:
    return term.tap(badge).split()[0], term.tap(badge)


def test_config_overlay_pulled_applied_at_reboot_bad_ones_refused(tmp_path: Path) -> None:
    central = e2e.start_central(tmp_path)
    sntp = SntpServer().start()
    term = None
    state = tmp_path / "state"
    try:
        cfg = e2e.config(sntp.port, central, sntp={"min_poll_s": 1, "timeout_ms": 300},
                         terminal={"duplicate_window_s": 0})
        set_overlay(central, OVERLAY)
        term = e2e.terminal(tmp_path, cfg)

        # First boot: the overlay is pulled, and waits for a reboot; the local config stays in force.
        st = e2e.wait_for(lambda: (lambda s: s if s["config_pending"] else None)(term.status()), 30,
                          "the overlay pulled and pending")
        assert st["uplink"]["config_pulls"] == 1 and st["uplink"]["config_error"] is None, st["uplink"]
        assert st["config_error"] is None
        a, b = double_tap(term, "AA02")
        assert (a, b.split()[0]) == ("OK", "OK"), "the new overlay must wait for the reboot"

        # Power cut and restart: the overlay holds.
        term.kill()
        written = flash_file(state, "config.central.json")
        assert written is not None and json.loads(written["text"]) == OVERLAY
        assert flash_file(state, "config.etag") is not None
        term.start()
        st = config_checked(term)
        assert st["config_error"] is None and st["config_pending"] is False, st
        assert (st["uplink"]["config_pulls"], st["uplink"]["config_writes"]) == (0, 0), st["uplink"]  # a 304
        assert central.central.stats["config_not_modified"] >= 1
        a, b = double_tap(term, "AA03")
        assert (a, b) == ("OK", "DENY duplicate"), b
        seq_aa03 = term.status()["journal"]["last_seq"]
        rows = e2e.wait_for(lambda: [r for r in central.store.punches(e2e.DEVICE) if r["seq"] == seq_aa03], 30,
                            "the AA03 punch at the central")
        assert rows[0]["badge"] == "AA03" and rows[0]["utc_offset_min"] == 540  # JST-9 from the overlay

        # Bad overlays at a central that does not check them (the reference central refuses them:
        # test_central_admin.py): refused on the terminal, which keeps running with the old one.
        for bad, named in (({"device_id": "evil", "terminal": {"duplicate_window_s": 0}}, "device_id"),
                           ({"terminal": {"duplicate_window_s": "0"}}, "terminal.duplicate_window_s")):
            central.store.set_config(e2e.DEVICE, bad)
            term.kill()
            term.start()
            st = e2e.wait_for(lambda: (lambda s: s if s["uplink"]["config_error"] else None)(term.status()), 30,
                              "the bad overlay refused")
            assert st["uplink"]["config_error"].startswith(f"config: {named}"), st["uplink"]
            assert st["uplink"]["config_pulls"] == 0 and st["config_pending"] is False
            assert st["config_error"] is None  # the overlay in force is still the good one
            badge = "BB" + named[:2].upper().encode().hex()
            a, b = double_tap(term, badge)
            assert (a, b) == ("OK", "DENY duplicate"), (bad, b)

        # Neither the 304 nor the refused overlays touched the file; after one more reboot the good
        # overlay is still in force.
        term.kill()
        after = flash_file(state, "config.central.json")
        assert after == written, (after, written)
        term.start()
        st = config_checked(term)
        assert st["config_error"] is None and st["uplink"]["config_error"] is not None
        assert double_tap(term, "AA04")[1] == "DENY duplicate"

        # An overlay on flash that no longer validates (here written by hand: a damaged file, or a
        # firmware whose limits changed): the terminal boots with the local config alone and says so.
        term.kill()
        flash_file(state, "config.central.json", write='{"terminal": {"duplicate_window_s": "x"}}')
        term.start()
        st = term.status()
        assert st["config_error"].startswith(
            "central overlay refused, local config in force: terminal.duplicate_window_s: expected int"), st
        a, b = double_tap(term, "AA05")
        assert (a, b.split()[0]) == ("OK", "OK"), b  # the local config: no duplicate window
    finally:
        if term is not None:
            term.stop()
        sntp.stop()
        central.stop()
