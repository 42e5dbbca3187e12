"""The config pull: the central's overlay of policy fields over the terminal's local config. Checked on
the device by clockterm.config.merge_overlay (imported for the check, unloaded after), written
atomically to config.central.json with its ETag after the swap; a refused overlay leaves the old one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from clockterm_host.central import Handle
from clockterm_host.defaults import default_config
from mp import mp_json, script
from test_uplink import config, run

# --- merge_overlay on the device --------------------------------------------------------------------

def _merge_all(local: dict[str, Any], overlays: list[Any]) -> list[Any]:
    """merge_overlay(local, o) for each o in one micropython process: the merged doc or the error text;
    last, whether local came out unchanged."""
    out = mp_json(script("uplink_config_mp.py", {"LOCAL": json.dumps(local), "OVERLAYS": json.dumps(overlays)},
                         "main()"))
    assert isinstance(out, list)
    return out


def test_merge_overlay_takes_policy_fields_only() -> None:
    local = default_config("sim", "term-1")
    good = {"tz": "JST-9", "terminal": {"duplicate_window_s": 120, "kind_mode": "in"},
            "journal": {"full_policy": "overwrite"}, "sntp": {"servers": ["a.example", "b.example:1123"],
                                                              "interval_s": 64},
            "central": {"batch_max": 7, "interval_s": 30}}
    refused = [
        ({"device_id": "evil"}, "device_id: not allowed from central"),
        ({"central": {"url": "https://evil.example"}}, "central.url: not allowed from central"),
        ({"central": {"client_secret": "x"}}, "central.client_secret: not allowed"),
        ({"central": {"ca": "/evil.pem"}}, "central.ca: not allowed"),
        ({"network": {"wifi_ssid": "evil"}}, "network.wifi_ssid: not allowed"),
        ({"sntp": {"port": 9}}, "sntp.port: not allowed"),
        ({"endpoint": {"tokens": []}}, "endpoint.tokens: not allowed"),
        ({"version": 1}, "version: not allowed"),
        ({"terminal": {"duplicate_window_s": "60"}}, "terminal.duplicate_window_s: expected int, got string"),
        ({"terminal": {"duplicate_window_s": None}}, "terminal.duplicate_window_s: expected int, got null"),
        ({"terminal": {"duplicate_window_s": 99999}}, "terminal.duplicate_window_s: 99999 is out of range"),
        ({"terminal": {"unknown_badge": "maybe"}}, "terminal.unknown_badge: 'maybe' is not one of"),
        ({"terminal": {"beep": True}}, "terminal.beep: not a config field"),
        ({"terminal": 5}, "terminal: expected an object, got int"),
        ({"tz": "not a rule"}, "tz:"),
        ({"tz": 9}, "tz: expected string, got int"),
        ({"sntp": {"servers": []}}, "sntp.servers: needs 1..8 entries"),
        ([1, 2], "overlay: expected a JSON object, got list"),
    ]
    out = _merge_all(local, [{}, good] + [o for o, _ in refused])
    assert out[0] == local  # an empty overlay is the local config
    merged = out[1]
    assert merged["tz"] == "JST-9"
    assert merged["terminal"] == {"duplicate_window_s": 120, "unknown_badge": "record", "kind_mode": "in",
                                  "shift_max_h": 16}
    assert merged["journal"]["full_policy"] == "overwrite"
    assert merged["sntp"]["servers"] == ["a.example", "b.example:1123"] and merged["sntp"]["interval_s"] == 64
    assert merged["sntp"]["port"] == local["sntp"]["port"]  # untouched fields stay
    assert merged["central"] == {**local["central"], "batch_max": 7, "interval_s": 30}
    assert merged["device_id"] == "term-1" and merged["network"] == local["network"]
    for (overlay, want), got in zip(refused, out[2:-1], strict=True):
        assert isinstance(got, str) and got.startswith(want), (overlay, got)
    assert "only tz, terminal.*, journal.full_policy" in out[2]
    assert out[-1] is True  # local was not changed by any merge


# --- the pull by the uplink -------------------------------------------------------------------------

def set_overlay(h: Handle, overlay: Any, device: str = "term-1") -> None:
    assert h.admin(f"/config/{device}", overlay) == {"ok": True}


def set_unchecked_overlay(h: Handle, overlay: Any, device: str = "term-1") -> None:
    # What a central that does not check would serve (the reference one refuses it: test_central_admin.py).
    h.store.set_config(device, overlay)


def pull(h: Handle, fs: Path, local: Path, **kw: Any) -> dict[str, Any]:
    return run(config(h, initial=3, fs_root=str(fs), local_config=str(local), stay=True, deadline_ms=1500, **kw))


@pytest.fixture
def fs(tmp_path: Path) -> Path:
    d = tmp_path / "fs"
    d.mkdir()
    return d


@pytest.fixture
def local(tmp_path: Path) -> Path:
    p = tmp_path / "config.json"
    p.write_text(json.dumps(default_config("sim", "term-1")))
    return p


def test_overlay_pulled_written_atomically_then_304(central: Handle, fs: Path, local: Path) -> None:
    overlay = {"tz": "JST-9", "terminal": {"duplicate_window_s": 120}}
    set_overlay(central, overlay)
    out = pull(central, fs, local)
    assert out["config_error"] is None, out
    assert (out["config_checks"], out["config_pulls"], out["config_writes"]) == (1, 1, 1)
    assert out["config_pending"] is True  # no overlay at boot, one on flash now
    assert out["config_module_loaded"] is False  # unloaded after the check
    assert out["acked"] == 3  # punches went first, and still went
    cfile, efile = fs / "config.central.json", fs / "config.etag"
    assert json.loads(cfile.read_text()) == overlay
    etag = efile.read_text()
    assert etag.startswith('"') and not (fs / "config.central.json.tmp").exists()
    stamps = cfile.stat().st_mtime_ns, efile.stat().st_mtime_ns
    assert central.central.stats.get("config_requests") == 1

    # A reboot with the same overlay at central: a 304, nothing rewritten, nothing pending.
    out = pull(central, fs, local, journal_id="j2")
    assert (out["config_checks"], out["config_pulls"], out["config_writes"]) == (1, 0, 0), out
    assert out["config_pending"] is False and out["config_error"] is None
    assert (cfile.stat().st_mtime_ns, efile.stat().st_mtime_ns) == stamps
    assert central.central.stats.get("config_not_modified") == 1

    # The ETag lost (a cut between the swap and its write): the same overlay comes again with a 200,
    # is checked, but the file is not rewritten and nothing is pending; the ETag is back.
    efile.unlink()
    out = pull(central, fs, local, journal_id="j3")
    assert (out["config_pulls"], out["config_writes"], out["config_pending"]) == (1, 0, False), out
    assert cfile.stat().st_mtime_ns == stamps[0] and efile.read_text() == etag

    # A changed overlay replaces the old one whole, with a new ETag.
    set_overlay(central, {"central": {"batch_max": 5}})
    out = pull(central, fs, local, journal_id="j4")
    assert (out["config_pulls"], out["config_writes"], out["config_pending"]) == (1, 1, True), out
    assert json.loads(cfile.read_text()) == {"central": {"batch_max": 5}}
    assert efile.read_text() != etag


@pytest.mark.parametrize(("bad", "named"), [
    ({"device_id": "evil", "tz": "UTC0"}, "device_id: not allowed from central"),
    ({"central": {"url": "https://evil.example"}}, "central.url: not allowed from central"),
    ({"terminal": {"duplicate_window_s": "60"}}, "terminal.duplicate_window_s: expected int, got string"),
    ({"tz": "not a rule"}, "tz:"),
])
def test_bad_overlay_is_refused_and_the_old_one_stays(central: Handle, fs: Path, local: Path,
                                                       bad: dict[str, Any], named: str) -> None:
    good = {"terminal": {"duplicate_window_s": 120}}
    set_overlay(central, good)
    assert pull(central, fs, local)["config_pulls"] == 1
    cfile, efile = fs / "config.central.json", fs / "config.etag"
    before = cfile.read_bytes(), efile.read_text(), cfile.stat().st_mtime_ns

    set_unchecked_overlay(central, bad)
    out = pull(central, fs, local, journal_id="j2")
    assert out["config_error"] is not None and out["config_error"].startswith("config: " + named), out
    assert (out["config_checks"], out["config_pulls"], out["config_writes"]) == (1, 0, 0)
    assert out["config_pending"] is False
    assert out["config_module_loaded"] is False  # unloaded on the error path too
    assert (cfile.read_bytes(), efile.read_text(), cfile.stat().st_mtime_ns) == before  # old overlay, old ETag
    assert not (fs / "config.central.json.tmp").exists()
    assert out["acked"] == 3  # a refused overlay holds up no punch

    # Fixed at central: the next pull (the ETag was not moved) takes it.
    set_overlay(central, {"terminal": {"duplicate_window_s": 30}})
    out = pull(central, fs, local, journal_id="j3")
    assert out["config_error"] is None and out["config_pulls"] == 1, out
    assert json.loads(cfile.read_text()) == {"terminal": {"duplicate_window_s": 30}}


def test_overlay_is_checked_against_the_local_config(central: Handle, fs: Path, tmp_path: Path) -> None:
    # Without a readable local config nothing can be checked: nothing is written.
    set_overlay(central, {"terminal": {"duplicate_window_s": 120}})
    out = pull(central, fs, tmp_path / "missing.json")
    assert out["config_error"].startswith("config: local config unusable (config: cannot read"), out
    assert out["config_pulls"] == 0 and not (fs / "config.central.json").exists()
    assert not (fs / "config.etag").exists()


def test_oversized_overlay_is_refused(central: Handle, fs: Path, local: Path) -> None:
    set_unchecked_overlay(central, {"terminal": {"kind_mode": "in"}, "pad": "x" * 3000})
    out = pull(central, fs, local)
    assert out["config_error"] == "config: answer body too large", out
    assert not (fs / "config.central.json").exists()
