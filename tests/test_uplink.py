"""The uplink supervisor (lib/clockterm/uplink.py) under micropython against the real central, with faults."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import mp
import pytest
import trustme
from clockterm_host.central import Handle, start_background

DRIVER = (Path(__file__).parent / "uplink_mp.py").read_text()
FAST = {"backoff_min_ms": 50, "backoff_max_ms": 400, "interval_ms": 200, "rejected_pause_ms": 800}



def config(h: Handle, **kw: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "url": h.url,
        "ca": str(h.ca_path),
        "device": "term-1",
        "secret": "pw1",
        "tune": dict(FAST),
        "client": {"timeout_ms": 1500, "connect_timeout_ms": 1500},
    }
    for k, v in kw.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    return cfg


def run(cfg: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(cfg, f)
        f.flush()
        out = mp.mp_json(DRIVER, args=[f.name], timeout=timeout)
    assert isinstance(out, dict)
    return out


def start(cfg: dict[str, Any], path: Path) -> subprocess.Popen[str]:
    """The driver in the background (for faults switched while it runs)."""
    path.write_text(json.dumps(cfg))
    argv, env = mp.bundle.launch(mp.device_dir("sim"), mp.HEAP, DRIVER)
    return subprocess.Popen([*argv, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(p: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, f"driver failed:\n{out}\n{err}"
    return json.loads([ln for ln in out.splitlines() if ln.strip()][-1])


def assert_exactly_once(h: Handle, n: int, journal: str = "j1") -> None:
    rows = [r for r in h.store.punches("term-1") if r["journal_id"] == journal]
    assert [r["seq"] for r in rows] == list(range(1, n + 1))
    for r in rows:  # fields arrive as the journal had them
        s = r["seq"]
        assert (r["badge"], r["utc_ms"], r["kind"]) == (
            f"B{s:05d}",
            1_780_000_000_000 + s * 1000,
            "in" if s % 2 else "out",
        )
        assert r["quality"] == ("unsynced", "synced", "stale")[s % 3]
        assert r["employee_id"] == (f"E{s % 7}" if s % 5 else None)
        assert (r["uncertainty_ms"], r["utc_offset_min"]) == (s % 50, 60)


def test_drains_backlog_and_live_taps_in_batches(central: Handle) -> None:
    out = run(config(central, initial=450, taps=30, tap_every_ms=20, batch_max=100))
    assert out["acked"] == out["last"] == 480 and out["bad_acks"] == 0
    assert_exactly_once(central, 480)
    assert out["connections"] == 1  # one TLS handshake, kept alive
    assert out["batches"] < 40  # batched, not one request per punch
    assert out["last_error"] is None and out["heap_peak"] < 60_000


def test_waits_for_a_valid_clock(central: Handle) -> None:
    out = run(config(central, initial=5, unsynced_ms=1500))
    assert "waiting_clock" in out["states"] and out["acked"] == 5
    assert out["done_ms"] >= 1500
    assert_exactly_once(central, 5)


def test_fault_matrix_exactly_once(central: Handle) -> None:
    queue = [
        {"do": "status", "code": 500},
        {"do": "status", "code": 429, "retry_after": 1},
        {"do": "status", "code": 413},
        {"do": "stall", "s": 3},
        {"do": "reset"},
        {"do": "bad_json"},
        {"do": "wrong_shape"},
        {"do": "bogus_ack"},
        {"do": "close"},
        {"do": "status", "code": 503},
        {"do": "trickle", "bps": 30},
        {"do": "status", "code": 500, "path": "/v1/oauth/token"},
    ]
    central.set_faults(queue=queue, token_ttl_s=2, error_rate=0.1, reset_rate=0.1, seed=7)
    out = run(config(central, initial=200, taps=60, tap_every_ms=50, batch_max=40, deadline_ms=60000))
    assert out["acked"] == out["last"] == 260 and out["bad_acks"] == 0, out
    assert_exactly_once(central, 260)
    stats = central.admin("/stats")
    assert central.central.faults.queue == []  # every injected fault was met
    assert stats["punches_duplicate"] > 0  # answers were lost after storing, and resent
    assert stats["tokens_issued"] >= 2  # the 2 s token expired and was refreshed
    assert 1 <= out["batch_max"] <= 20  # halved by the 413 (from the batch that was sent, bytes-bound)


def test_request_buffer_shared_with_another_user(central: Handle) -> None:
    # The uplink's request buffer lent by its creator (an OutBuf, as the control port's) and overwritten
    # by another user at every turn of the event loop: the uplink fills each piece of a request into it
    # right before that piece's write (a batch of 100 is three pieces, with a turn of the loop between
    # them), and again for a resend (a kept-alive connection found closed, a 401), so every punch still
    # arrives intact, exactly once. Held across an await, its body would be garbage (400).
    central.set_faults(queue=[{"do": "close"}, {"do": "status", "code": 401}, {"do": "chunked"},
                              {"do": "status", "code": 500}, {"do": "close"}, {"do": "reset"}])
    out = run(config(central, initial=300, taps=40, tap_every_ms=20, batch_max=100, shared_buf=2048))
    assert out["acked"] == out["last"] == 340 and out["bad_acks"] == 0, out
    assert_exactly_once(central, 340)
    assert central.central.faults.queue == []  # every fault was met, the resends among them
    assert "rejected" not in out["states"] and out["last_error"] is None, out
    assert out["clobbers"] > 100
    assert out["max_batch"] == 100 and out["batches"] >= 340 // 100  # batches over the buffer's size


def test_batch_larger_than_the_request_buffer_goes_in_one_request(central: Handle) -> None:
    # 100 punches are about 5.5 KB of body, the request buffer 2 KB: the batch is bounded by batch_max,
    # not by the buffer. One request (its body streamed in pieces), one answer, one ack, every punch
    # stored once.
    out = run(config(central, initial=100, batch_max=100, shared_buf=2048))
    assert out["acked"] == out["last"] == 100 and out["bad_acks"] == 0, out
    assert out["batches"] == 1 and out["acks"] == 1 and out["requests"] == 2, out  # a token, one batch
    assert central.admin("/stats")["punch_requests"] == 1
    assert_exactly_once(central, 100)
    assert out["last_error"] is None


def test_rows_changed_between_the_passes_abort_the_request(central: Handle) -> None:
    # A batch of 100 is sized from one read of the journal and sent from later ones. Here the punches
    # change in between (a clock correction, as at the first sync, from the journal's third read on:
    # the second piece): the rows grow, the body no longer matches its Content-Length, the request is
    # aborted and the connection closed before the server has the whole body. Nothing is stored or
    # acked from it; the batch goes again, as corrected, and is stored once.
    out = run(config(central, initial=100, batch_max=100, correct_from_read=3))
    assert out["acked"] == out["last"] == 100 and out["bad_acks"] == 0 and out["acks"] == 1, out
    assert "backoff" in out["states"] and out["connections"] == 2, out
    stats = central.admin("/stats")
    assert stats["punches_inserted"] == 100 and stats.get("punches_duplicate", 0) == 0, stats
    rows = [r for r in central.store.punches("term-1") if r["journal_id"] == "j1"]
    assert [r["seq"] for r in rows] == list(range(1, 101))
    assert all(r["quality"] == "corrected" and r["utc_ms"] == 1_780_000_000_007 + r["seq"] * 1000 for r in rows)


def test_413_halves_a_streamed_batch(central: Handle) -> None:
    # The central refuses the 100-punch batch (answering before it has read the body's later pieces):
    # batch_max halves from the batch sent, 100 -> 50, and the punches go in two batches of 50.
    central.set_faults(queue=[{"do": "status", "code": 413}])
    out = run(config(central, initial=100, batch_max=100))
    assert out["acked"] == out["last"] == 100 and out["bad_acks"] == 0, out
    assert out["batch_max"] == 50 and out["batches"] == 2 and out["connections"] == 1, out
    assert_exactly_once(central, 100)


def test_a_batch_refused_once_is_halved_and_goes(central: Handle, tmp_path: Path) -> None:
    # A 400 for a batch: halved to find the punch refused; the central takes the half (its refusal did
    # not last), so nothing is kept aside, nothing waits, and the batches grow back: 10 refused, 5 and 5
    # stored, the limit doubled after each (to 10, to 20; gone once it reaches batch_max)
    central.set_faults(queue=[{"do": "status", "code": 400}])
    out = run(config(central, initial=10, fs_root=str(tmp_path)))
    assert out["acked"] == 10 and out["refused"] == 0 and out["rejected_seq"] is None, out
    assert "rejected" not in out["states"] and out["batches"] == 2 and out["limit"] == 20, out
    assert_exactly_once(central, 10)
    assert not (tmp_path / "refused").exists() or not list((tmp_path / "refused").iterdir())


def stored_seqs(h: Handle) -> list[int]:
    return [r["seq"] for r in h.store.punches("term-1") if r["journal_id"] == "j1"]


def test_a_punch_the_central_refuses_is_kept_aside_and_the_rest_go(central: Handle, tmp_path: Path) -> None:
    # The central refuses three punches for good (a 400 for any batch holding them): each is found by
    # halving, kept aside on flash and acked; every other punch is stored, once. Health would say
    # failing (endpoint: tests/test_endpoint_api.py). Then the central takes them: offered again with
    # the pulls, they are stored and their files go.
    refused = [1, 6, 17]
    central.set_faults(refuse_badges=[f"B{s:05d}" for s in refused])
    out = run(config(central, initial=20, batch_max=8, fs_root=str(tmp_path), deadline_ms=15000))
    assert out["acked"] == 20 and out["refused"] == 3 and out["bad_acks"] == 0, out
    assert stored_seqs(central) == [s for s in range(1, 21) if s not in refused]
    kept = sorted((tmp_path / "refused").iterdir())
    assert [k.name for k in kept] == sorted(f"j1.{s}" for s in refused)
    row = json.loads(kept[0].read_text())  # the punch's row, as a batch carries it
    assert row[:2] == [1, "B00001"], row
    # Rebooted, the three still kept (counted from flash); the central takes them now
    central.set_faults(refuse_badges=[])
    out = run(config(central, acked=20, initial=0, fs_root=str(tmp_path), stay=True, deadline_ms=3000))
    assert out["refused"] == 0 and out["bad_acks"] == 0, json.dumps(out)
    assert_exactly_once(central, 20)
    assert not list((tmp_path / "refused").iterdir())


def test_a_central_that_refuses_everything_fills_the_room_then_pauses(central: Handle, tmp_path: Path) -> None:
    # Every punch refused: 32 are kept aside (the room kept for them), then the next batch pauses for
    # rejected_pause_ms, as every 400 did before; nothing is stored, nothing is lost (the journal holds
    # the rest, unacked). Then the central takes all but the 33rd: before the pause goes on, the punches
    # kept aside are offered again, the room they leave takes the 33rd, and the rest goes.
    central.set_faults(refuse_badges=[f"B{s:05d}" for s in range(1, 41)])
    out = run(config(central, initial=40, batch_max=8, fs_root=str(tmp_path), deadline_ms=8000,
                     tune={"rejected_pause_ms": 60000}))
    assert out["refused"] == 32 and out["acked"] == 32 and out["state"] == "rejected", out
    assert out["rejected_seq"] == 33 and stored_seqs(central) == [], out
    assert len(list((tmp_path / "refused").iterdir())) == 32
    central.set_faults(refuse_badges=["B00033"])
    out = run(config(central, initial=8, acked=32, batch_max=8, fs_root=str(tmp_path), deadline_ms=10000,
                     tune={"rejected_pause_ms": 60000}))
    assert out["acked"] == 40 and out["refused"] == 1 and out["bad_acks"] == 0, out
    assert stored_seqs(central) == [s for s in range(1, 41) if s != 33]
    assert [k.name for k in (tmp_path / "refused").iterdir()] == ["j1.33"]


def test_one_still_refused_does_not_hold_back_the_others_kept_aside(central: Handle, tmp_path: Path) -> None:
    # Three kept aside; the central now takes all but the first listed: the others are stored; a file not
    # of a punch (a technician's note, a folder) is passed over; one cut short by a power cut is removed
    central.set_faults(refuse_badges=["B00002", "B00006", "B00009"])
    out = run(config(central, initial=10, fs_root=str(tmp_path), deadline_ms=8000))
    assert out["refused"] == 3 and out["acked"] == 10, out
    folder = tmp_path / "refused"
    (folder / "notes").write_text("hello")
    (folder / "j1.11").write_bytes(b"")  # cut short
    central.set_faults(refuse_badges=["B00002"])
    out = run(config(central, acked=10, initial=0, fs_root=str(tmp_path), stay=True, deadline_ms=3000))
    assert sorted(k.name for k in folder.iterdir()) == ["j1.2", "notes"], out
    assert out["refused"] == 2 and out["batch_max"] == 200, out  # (the note counts: health names it)
    assert stored_seqs(central) == [s for s in range(1, 11) if s != 2]


def test_a_413_while_a_refused_punch_is_looked_for_or_offered_again(central: Handle, tmp_path: Path) -> None:
    # A central that takes at most 5 punches a request: its 413 halves batch_max as always, also while
    # the batch is halved to find a refused punch; a 413 to a punch offered again (one punch: not a size
    # matter) leaves batch_max alone
    central.set_faults(refuse_badges=["B00030"], max_batch=5)
    out = run(config(central, initial=60, batch_max=16, fs_root=str(tmp_path), deadline_ms=10000))
    assert out["acked"] == 60 and out["refused"] == 1 and out["batch_max"] == 4, out
    assert stored_seqs(central) == [s for s in range(1, 61) if s != 30]
    central.set_faults(refuse_badges=[], max_batch=1000, queue=[{"do": "status", "code": 413}])
    out = run(config(central, acked=60, initial=0, fs_root=str(tmp_path), stay=True, deadline_ms=3000))
    assert out["refused"] == 1 and out["batch_max"] == 200, out  # offered again after the pulls: 413, kept


def test_the_root_folder_is_a_folder_to_keep_in() -> None:
    # An ESP32's files are at the root: its fs_root is "" (not None), and the roster and the config
    # overlay are pulled there as on any board
    code = """
from clockterm import uplink
from clockterm.roster import Roster
up = uplink.Uplink(None, None, "d", "https://c.example", "d", "s", client=object(), roster=Roster("/no/roster.bin"),
                   fs_root="", config_path="/config.json")
print(up.roster is not None, up.config_path, up.refused)
"""
    assert mp.run_mp(code).stdout.split() == ["True", "/config.json", "0"]


def test_without_a_folder_to_keep_it_a_refused_batch_pauses(central: Handle) -> None:
    # No fs_root: nowhere to keep a refused punch aside; its batch waits rejected_pause_ms, then goes
    central.set_faults(refuse_badges=["B00003"])
    p_cfg = config(central, initial=5, tune={"rejected_pause_ms": 1500}, deadline_ms=4000)
    out = run(p_cfg)
    assert "rejected" in out["states"] and out["acked"] == 2 and out["rejected_seq"] == 3, out
    assert stored_seqs(central) == [1, 2]


@pytest.mark.parametrize("case", ["expired", "wronghost", "wrong_ca", "dns"])
def test_never_sends_over_an_unverified_connection(central: Handle, tmp_path: Path, case: str) -> None:
    cfg = config(central, initial=5, deadline_ms=1500)
    if case in ("expired", "wronghost"):
        central.set_faults(tls=case)
    elif case == "wrong_ca":
        (tmp_path / "other.pem").write_bytes(trustme.CA().cert_pem.bytes())
        cfg["ca"] = str(tmp_path / "other.pem")
    else:
        cfg["url"] = "https://no-such-host.invalid"
    out = run(cfg)
    assert out["acked"] == 0 and out["state"] == "backoff" and "connection" in out["last_error"]
    assert central.admin("/stats").get("token_requests", 0) == 0 and central.store.count() == 0
    if case in ("expired", "wronghost"):
        central.set_faults(tls="good")
        out = run(config(central, initial=5))
        assert out["acked"] == 5
        assert_exactly_once(central, 5)


def test_server_down_then_back_while_taps_come(central: Handle, tmp_path: Path) -> None:
    state, port = central.state, central.port
    p = start(config(central, initial=50, taps=80, tap_every_ms=50, deadline_ms=30000), tmp_path / "drv.json")
    time.sleep(1.0)
    central.stop()  # down for 2 s while taps keep coming
    time.sleep(2.0)
    back = start_background(state, port=port)
    try:
        back.set_faults(tls="expired")  # then a bad certificate for a while
        time.sleep(1.0)
        back.set_faults(tls="good")
        out = finish(p)
        assert out["acked"] == out["last"] == 130 and out["bad_acks"] == 0, out
        assert out["connections"] >= 2
        assert_exactly_once(back, 130)
    finally:
        if p.poll() is None:
            p.kill()
        back.stop()
