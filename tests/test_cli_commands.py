"""CLI commands no other test runs: `clockterm recover clear-crashes` and `recover export-journal` on a
stopped sim terminal's state folder, `clockterm firmware pin`, `firmware image` and `firmware partitions`.

Each runs the real CLI (the installed `clockterm` in a subprocess, or cli.main() where the command writes
firmware/versions.json or reads the pin from it: there it is pointed at a temporary copy) and checks
what the command did, read back, not only its exit code."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from clockterm_host import bundle, cli, firmware, partitions, recover
from clockterm_host.defaults import default_config
from clockterm_host.runner import Terminal
from clockterm_host.sim import free_port
from test_broken_files import flash
from test_flash import _versions_with, images  # noqa: F401 - images: the fixture, used by name

CLI = str(Path(sys.executable).parent / "clockterm")
BADGES = ["04A1B2C3", "04D5E6F7", "1234"]
BOARD = "esp32-devkitc-rc522"


def ct(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120)


# --- recover on a sim terminal's state folder -----------------------------------------------------------


@pytest.fixture(scope="module")
def sim_state(tmp_path_factory) -> Path:
    """A stopped sim terminal (config.json in its state folder) that took three punches, the first acked:
    no time server and no central there, so the clock stays unsynced and nothing is sent."""
    st = tmp_path_factory.mktemp("sim") / "st"
    st.mkdir()
    cfg = default_config("sim")
    cfg["sim"]["control_port"] = free_port()
    cfg["sntp"]["port"] = free_port()
    cfg["endpoint"]["port"] = free_port()
    cfg["central"]["url"] = f"https://127.0.0.1:{free_port()}"  # nobody there: every punch stays unsent
    (st / "config.json").write_text(json.dumps(cfg))
    t = Terminal(st / "config.json", st).start()
    try:
        for i, b in enumerate(BADGES, 1):
            answer = t.tap(b)
            assert answer.startswith(f"OK {i} "), (answer, t.console())
    finally:
        t.stop()
    # Seq 1 acked as an upload would ack it, through the device's own journal code.
    recover._run_sim(st, st / "config.json",
                     "import clockterm.recover as r\nj = r._journal(r._board())\nj.ack(1)\nj.close()\n")
    return st


def _status(st: Path) -> dict:
    return recover.Target(None, str(st)).run("status()")[-1]


def test_recover_clear_crashes_sets_the_count_to_zero(sim_state):
    st = ["--state", str(sim_state)]
    flash(sim_state, {"crashes": b"3"})
    assert _status(sim_state)["crashes"] == 3
    r = ct("recover", "status", *st)
    assert "safe mode      YES (3 crashes in a row)" in r.stdout, r.stdout + r.stderr
    r = ct("recover", "clear-crashes", *st)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "crash count 3 -> 0"
    doc = _status(sim_state)
    assert doc["crashes"] == 0 and doc["safe_mode"] is False
    r = ct("recover", "status", *st)
    assert re.search(r"^crash count    0 \(safe mode at 3\)$", r.stdout, re.M), r.stdout
    assert re.search(r"^safe mode      no$", r.stdout, re.M), r.stdout
    # Again, with nothing to clear: said as it is.
    r = ct("recover", "clear-crashes", *st)
    assert r.returncode == 0 and r.stdout.strip() == "crash count 0 -> 0", r.stdout + r.stderr


def _rows(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def test_recover_export_journal_writes_the_unsent_punches_or_all(sim_state, tmp_path):
    jid = _status(sim_state)["journal"]["journal_id"]
    out = tmp_path / "unsent.jsonl"
    r = ct("recover", "export-journal", "--state", str(sim_state), "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == f"{out}: 2 punches of journal {jid}"
    rows = _rows(out)
    assert [(p["seq"], p["badge"], p["journal_id"]) for p in rows] == [(2, BADGES[1], jid), (3, BADGES[2], jid)]
    assert all(p["quality"] != "synced" for p in rows)  # no time server: stamped before a sync
    assert not out.with_name(out.name + ".tmp").exists()

    r = ct("recover", "export-journal", "--state", str(sim_state), "--out", str(out), "--all")
    assert r.returncode == 0 and r.stdout.strip() == f"{out}: 3 punches of journal {jid}", r.stdout + r.stderr
    rows = _rows(out)  # the file written anew, not appended to
    assert [(p["seq"], p["badge"]) for p in rows] == list(enumerate(BADGES, 1))
    stamps = [p["utc_ms"] for p in rows]
    assert stamps == sorted(stamps) and all(p["journal_id"] == jid for p in rows)
    # An export changes nothing on the terminal: the same punches stay unsent.
    j = _status(sim_state)["journal"]
    assert (j["last_seq"], j["acked_seq"], j["pending"]) == (3, 1, 2)


def test_recover_export_journal_needs_out_and_a_target(sim_state, tmp_path):
    r = ct("recover", "export-journal", "--state", str(sim_state))
    assert r.returncode == 2 and "--out" in r.stderr
    r = ct("recover", "export-journal", "--out", str(tmp_path / "x.jsonl"))
    assert r.returncode == 2 and "one of the arguments --port --state is required" in r.stderr
    assert not (tmp_path / "x.jsonl").exists()


# --- firmware -------------------------------------------------------------------------------------------


@pytest.fixture
def repo_versions_untouched():
    """Whatever a test does, the repository's firmware/versions.json is left as it was."""
    path = firmware.VERSIONS
    before = path.read_bytes()
    yield
    assert path.read_bytes() == before


def _point_at(monkeypatch, versions: Path, *names: str) -> None:
    """The CLI's commands read and write firmware/versions.json (a default bound when firmware.py is
    imported): pointed at `versions` here."""
    monkeypatch.setattr(firmware, "VERSIONS", versions)
    for name in names:
        monkeypatch.setattr(firmware, name, functools.partial(getattr(firmware, name), versions_path=versions))


def test_firmware_pin_cli_pins_an_image_and_refuses_a_damaged_one(images, tmp_path, monkeypatch, capsys,  # noqa: F811
                                                                   repo_versions_untouched):
    files, _ = images
    versions = _versions_with(tmp_path, "esp32", sha256=None, size=None)
    _point_at(monkeypatch, versions, "pin")
    data = files["esp32"].read_bytes()

    bad = tmp_path / "bad.bin"
    bad.write_bytes(data[:-5000])  # truncated in the app
    before = versions.read_bytes()
    assert cli.main(["firmware", "pin", "--chip", "esp32", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pin: image app: not a valid esp32 image") and "End of file" in err, err
    assert versions.read_bytes() == before  # nothing recorded
    assert cli.main(["firmware", "pin", "--chip", "esp32", str(tmp_path / "missing.bin")]) == 2
    assert "pin: image: cannot read" in capsys.readouterr().err

    assert cli.main(["firmware", "pin", "--chip", "esp32", str(files["esp32"])]) == 0
    sha = hashlib.sha256(data).hexdigest()
    out = capsys.readouterr().out
    assert out.strip() == f"esp32: pinned {files['esp32'].name} sha256 {sha} ({len(data)} bytes) in {versions}"
    ent = firmware.load_versions(versions)["images"]["esp32"]
    assert (ent["sha256"], ent["size"], ent["file"]) == (sha, len(data), files["esp32"].name)
    assert firmware.load_versions(versions)["images"]["esp32s3"]["sha256"] is None  # the other chip as it was
    firmware.flash_image(BOARD, files["esp32"], versions)  # the pinned image is now accepted

    # An image of the other chip under this chip's name: refused, the pin kept.
    assert cli.main(["firmware", "pin", "--chip", "esp32", str(files["esp32s3"])]) == 2
    assert capsys.readouterr().err.startswith("pin: image bootloader:")
    assert firmware.load_versions(versions)["images"]["esp32"]["sha256"] == sha


def test_firmware_pin_cli_takes_only_the_chips_of_versions_json(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["firmware", "pin", "--chip", "esp8266", "x.bin"])
    assert e.value.code == 2 and "invalid choice: 'esp8266'" in capsys.readouterr().err


def _partitions_cli(board: str, *extra: str) -> list[list[str]]:
    r = ct("firmware", "partitions", "--board", board, *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("# Name, Type, SubType, Offset, Size, Flags\n")
    return [row for row in csv.reader(io.StringIO(r.stdout)) if row and not row[0].startswith("#")]


@pytest.mark.parametrize("board", ["esp32-devkitc-rc522", "esp32-s3-devkitc-uart"])
def test_firmware_partitions_prints_the_csv_and_writes_the_table(board, tmp_path):
    cfg = bundle.board_config(board)
    fl = cfg["flash"]
    rows = _partitions_cli(board)
    assert [r[0] for r in rows] == ["nvs", "phy_init", "factory", "romfs", fl["journal"]["partition"], "vfs"]
    got = {r[0]: (r[1], r[2], int(r[3], 16), int(r[4], 16)) for r in rows}
    assert got["nvs"] == ("data", "nvs", 0x9000, 0x6000)
    assert got["phy_init"] == ("data", "phy", 0xF000, 0x1000)
    assert got["factory"] == ("app", "factory", 0x10000, fl.get("app_kb", partitions.DEFAULT_APP_KB) * 1024)
    assert got["romfs"][:2] == ("data", "0x8f")
    assert got[fl["journal"]["partition"]][3] == fl["journal"]["size_kb"] * 1024
    assert got["vfs"][:2] == ("data", "fat") and got["vfs"][3] == fl["fs_kb"] * 1024
    # Laid end to end, within the flash.
    spans = sorted((o, s) for _t, _st, o, s in got.values())
    assert all(a + n <= b for (a, n), (b, _) in zip(spans, spans[1:], strict=False))
    assert spans[-1][0] + spans[-1][1] <= fl["size_mb"] << 20

    # --out: the binary table (for 0x8000), the same partitions as the CSV, the CSV still printed.
    out = tmp_path / "table.bin"
    assert _partitions_cli(board, "--out", str(out)) == rows
    raw = out.read_bytes()
    assert len(raw) == partitions.TABLE_SIZE
    table = partitions.from_bytes(raw)
    assert [(p.name, p.offset, p.size) for p in table] == [(r[0], int(r[3], 16), int(r[4], 16)) for r in rows]

    # --no-romfs: the table for an image without ROMFS.
    assert [r[0] for r in _partitions_cli(board, "--no-romfs")] == [
        "nvs", "phy_init", "factory", fl["journal"]["partition"], "vfs"]


def test_firmware_partitions_refuses_an_unknown_board():
    r = ct("firmware", "partitions", "--board", "no-such-board")
    assert r.returncode == 2 and r.stderr.startswith("unknown board 'no-such-board' (known: "), r.stderr
    assert r.stdout == ""


def test_firmware_image_writes_the_merged_image_with_the_boards_table(images, tmp_path, monkeypatch,  # noqa: F811
                                                                     capsys, repo_versions_untouched):
    files, versions = images
    _point_at(monkeypatch, versions, "flash_image")
    out = tmp_path / f"{BOARD}.bin"
    assert cli.main(["firmware", "image", "--board", BOARD, "--image", str(files["esp32"]), "--out",
                     str(out)]) == 0
    offset = int(firmware.load_versions(versions)["images"]["esp32"]["offset"], 0)
    merged = out.read_bytes()
    assert capsys.readouterr().out.strip() == f"{out}: {len(merged)} bytes, to flash at {offset:#x}"

    # The table at 0x8000 is the one `firmware partitions` prints, offsets and sizes.
    table = partitions.from_bytes(merged[partitions.TABLE_OFFSET - offset:][:partitions.TABLE_SIZE])
    rows = _partitions_cli(BOARD)
    assert [(p.name, p.offset, p.size) for p in table] == [(r[0], int(r[3], 16), int(r[4], 16)) for r in rows]
    # The file: bootloader, table and app, nothing past the app (the size the source's app makes it).
    src = firmware.read_image(files["esp32"].read_bytes(), "esp32", offset)
    app = partitions.find(table, "factory")
    assert len(merged) == app.offset - offset + len(src.app)
    assert merged[app.offset - offset:] == src.app
    boot = firmware._load("esp32", merged[:partitions.TABLE_OFFSET - offset], "merged bootloader")
    assert boot.flash_size_freq >> 4 == 2  # the board's 4 MB in the bootloader's header


def test_firmware_image_refuses_an_image_that_is_not_the_pinned_one(images, tmp_path, monkeypatch, capsys):  # noqa: F811
    files, _ = images
    out = tmp_path / "x.bin"
    # As shipped (the real CLI, the repository's versions.json): the stand-in image is not the pinned one.
    r = ct("firmware", "image", "--board", BOARD, "--image", str(files["esp32"]), "--out", str(out))
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("image: ") and "clockterm firmware pin --chip esp32 FILE" in r.stderr, r.stderr
    assert not out.exists()
    # A damaged copy of the pinned image: its sha256 differs, refused before anything is written.
    versions = _versions_with(tmp_path, "esp32", sha256=hashlib.sha256(files["esp32"].read_bytes()).hexdigest())
    _point_at(monkeypatch, versions, "flash_image")
    bad = tmp_path / "bad.bin"
    data = bytearray(files["esp32"].read_bytes())
    data[0x20000] ^= 0xFF
    bad.write_bytes(bytes(data))
    assert cli.main(["firmware", "image", "--board", BOARD, "--image", str(bad), "--out", str(out)]) == 2
    assert "is not the pinned" in capsys.readouterr().err
    assert not out.exists()


def test_recover_takes_the_zone_in_force_for_corrected_punches(sim_state):
    # The zone the journal gives corrected punches their offset by (recover's exports): the config's,
    # with the central's overlay laid over it as the app lays it (its zone wins), and without one
    probe = "import clockterm.recover as r\nprint(r._zone(r._board()).offset_s(1783000000))\n"  # July 2026
    alone = recover._run_sim(sim_state, sim_state / "config.json", probe).split()[-1]
    try:
        flash(sim_state, {"config.central.json": json.dumps({"tz": "<+0930>-9:30"}).encode()})
        assert recover._run_sim(sim_state, sim_state / "config.json", probe).split()[-1] == "34200"
        flash(sim_state, {"config.central.json": b'{"tz": "XXX-19"}'})  # refused: the local config alone
        assert recover._run_sim(sim_state, sim_state / "config.json", probe).split()[-1] == alone != "34200"
    finally:
        flash(sim_state, {"config.central.json": None})
