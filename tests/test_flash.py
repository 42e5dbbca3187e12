"""`clockterm flash`: the partition table, the pinned image, the merged flash image (no board attached).

The partition table is parsed back by our parser and by an independent one (mp-image-tool-esp32's,
which checks the table's MD5 entry); the merged image by esptool's image reader and `image-info`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import esp_images
import pytest
from clockterm_host import REPO, bundle, cli, firmware, partitions
from mp_image_tool_esp32.partition_table import PartitionError as MpitError
from mp_image_tool_esp32.partition_table import PartitionTable

BOARDS = sorted(p.stem for p in (REPO / "board_configs").glob("*.json")
                if p.stem not in ("schema", "sim"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Firmware files in MicroPython's layout, one per chip, and a versions.json that pins them."""
    d = tmp_path_factory.mktemp("fw")
    doc = firmware.load_versions()
    files = {}
    for chip, ent in doc["images"].items():
        f = d / ent["file"]
        f.write_bytes(esp_images.firmware(chip))
        files[chip] = f
        ent["sha256"] = hashlib.sha256(f.read_bytes()).hexdigest()
        ent["code_id"] = bundle.code_id()
    versions = d / "versions.json"
    versions.write_text(json.dumps(doc))
    return files, versions


def _chip(board: str) -> str:
    return bundle.board_config(board)["chip"]


@pytest.mark.parametrize("board", BOARDS)
def test_every_board_has_an_image_and_a_table_that_fits(board):
    cfg = bundle.board_config(board)
    chip, ent = firmware.entry_for(cfg, firmware.load_versions())
    assert ent["romfs"] is True
    table = partitions.layout(cfg)
    raw = partitions.to_bytes(table)
    assert len(raw) == partitions.TABLE_SIZE
    assert partitions.from_bytes(raw) == table
    # An independent parser: checks the MD5 entry, the end marker, order, alignment and the flash size.
    theirs = PartitionTable.from_bytes(raw + b"\xff" * 0x400, max_size=cfg["flash"]["size_mb"] << 20)
    theirs.check()
    got = {p.name: (p.type_name, p.offset, p.size) for p in theirs}
    fl = cfg["flash"]
    assert got["factory"] == ("app", 0x10000, fl.get("app_kb", partitions.DEFAULT_APP_KB) * 1024)
    assert got["vfs"][2] == fl["fs_kb"] * 1024
    j = fl["journal"]
    assert got[j["partition"]][0] == "data" and got[j["partition"]][2] == j["size_kb"] * 1024
    assert got["romfs"][0] == "data" and theirs.by_name("romfs").subtype == 0x8F  # MicroPython's ROMFS subtype
    assert list(got) == ["nvs", "phy_init", "factory", "romfs", j["partition"], "vfs"]
    assert max(o + s for _t, o, s in got.values()) <= fl["size_mb"] << 20
    # The bundle's ROMFS image fits its partition.
    assert (bundle.build(board) / "romfs.img").stat().st_size <= got["romfs"][2]


def test_a_damaged_table_is_refused_by_both_parsers():
    table = partitions.layout(bundle.board_config("esp32-devkitc-rc522"))
    raw = bytearray(partitions.to_bytes(table))
    raw[32 * 4 + 8] ^= 0x01  # one bit of the journal's size
    with pytest.raises(partitions.PartitionError, match="MD5"):
        partitions.from_bytes(bytes(raw))
    with pytest.raises(MpitError, match="Checksum"):
        PartitionTable.from_bytes(bytes(raw))


def test_a_layout_past_the_end_of_flash_is_refused_with_what_to_change():
    cfg = json.loads(json.dumps(bundle.board_config("esp32-devkitc-rc522")))
    cfg["flash"]["fs_kb"] = 2048
    with pytest.raises(partitions.PartitionError, match=r"past the 4 MB flash by 960 KB.*fs_kb"):
        partitions.layout(cfg)
    cfg["flash"]["fs_kb"] = 1024
    cfg["flash"]["journal"]["partition"] = "vfs"
    with pytest.raises(partitions.PartitionError, match="'vfs' appears twice"):
        partitions.layout(cfg)


def test_an_image_without_romfs_gets_no_romfs_partition():
    table = partitions.layout(bundle.board_config("esp32-devkitc-rc522"), romfs=False)
    assert [p.name for p in table] == ["nvs", "phy_init", "factory", "journal", "vfs"]


def test_the_csv_is_what_esp_idf_reads():
    csv = partitions.to_csv(partitions.layout(bundle.board_config("esp32-devkitc-rc522")))
    assert "romfs,data,0x8f,0x1e0000,0x20000," in csv
    assert "journal,data,undefined,0x200000,0xf0000," in csv
    assert "vfs,data,fat,0x2f0000,0x100000," in csv


@pytest.mark.parametrize("board", ["esp32-devkitc-rc522", "heltec-wifi-kit-32-rc522", "esp32-s3-devkitc-uart"])
def test_merged_image_holds_table_and_partitions_where_the_table_says(board, images, tmp_path):
    files, versions = images
    chip = _chip(board)
    merged, offset, table = firmware.flash_image(board, files[chip], versions)
    src = firmware.read_image(files[chip].read_bytes(), chip, offset)
    assert offset == int(firmware.load_versions(versions)["images"][chip]["offset"], 0)

    def at(addr: int, n: int) -> bytes:
        return merged[addr - offset:addr - offset + n]

    # The table at 0x8000 is the board's, parsed back from the merged image.
    assert partitions.from_bytes(at(partitions.TABLE_OFFSET, partitions.TABLE_SIZE)) == table
    PartitionTable.from_bytes(at(partitions.TABLE_OFFSET, 0x1000)).check()
    # The app where the table's factory partition starts, unchanged and valid for esptool.
    app = partitions.find(table, "factory")
    assert at(app.offset, len(src.app)) == src.app
    firmware._load(chip, at(app.offset, app.size), "merged app")
    # The bootloader at its offset, valid, with the board's flash size in its header.
    boot = firmware._load(chip, merged[:partitions.TABLE_OFFSET - offset], "merged bootloader")
    size_mb = bundle.board_config(board)["flash"]["size_mb"]
    assert boot.flash_size_freq >> 4 == {4: 2, 8: 3, 16: 4}[size_mb]
    # Nothing is written past the app: the data partitions stay as the erase left them.
    assert len(merged) == app.offset - offset + len(src.app)
    # esptool's own image check, as a technician would run it.
    (tmp_path / "app.bin").write_bytes(at(app.offset, len(src.app)))
    r = subprocess.run([sys.executable, "-m", "esptool", "image-info", str(tmp_path / "app.bin")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "(valid)" in r.stdout, r.stdout + r.stderr


def _versions_with(tmp_path, chip: str, **change) -> object:
    doc = firmware.load_versions()
    doc["images"][chip].update(change)
    p = tmp_path / "versions.json"
    p.write_text(json.dumps(doc))
    return p


def test_an_unpinned_image_is_refused_with_how_to_pin_it(images, tmp_path):
    files, _ = images
    versions = _versions_with(tmp_path, "esp32", sha256=None)
    with pytest.raises(firmware.ImageError, match=r"not pinned yet.*clockterm firmware pin --chip esp32 FILE"):
        firmware.flash_image("esp32-devkitc-rc522", files["esp32"], versions)


def test_an_image_that_is_not_the_pinned_one_is_refused(images, tmp_path):
    files, _ = images
    versions = _versions_with(tmp_path, "esp32", sha256="0" * 64)
    with pytest.raises(firmware.ImageError, match="is not the pinned 0000"):
        firmware.flash_image("esp32-devkitc-rc522", files["esp32"], versions)


def test_pin_checks_the_image_then_records_it(images, tmp_path):
    files, _ = images
    versions = _versions_with(tmp_path, "esp32", sha256=None)
    ent = firmware.pin(files["esp32"], "esp32", versions)
    assert ent["sha256"] == hashlib.sha256(files["esp32"].read_bytes()).hexdigest()
    assert firmware.load_versions(versions)["images"]["esp32"]["size"] == files["esp32"].stat().st_size
    assert firmware.load_versions(versions)["images"]["esp32"]["code_id"] == bundle.code_id()
    firmware.flash_image("esp32-devkitc-rc522", files["esp32"], versions)  # now accepted


def test_pin_refuses_an_image_without_this_checkouts_code(tmp_path):
    """An image built from other code (or with none frozen in) is not what this checkout's terminals run."""
    other = tmp_path / "other.bin"
    other.write_bytes(esp_images.firmware("esp32", code_id=b"feedfacecafe"))
    versions = _versions_with(tmp_path, "esp32", sha256=None)
    with pytest.raises(firmware.ImageError, match=rf"does not carry lib/ as it is here \(code {bundle.code_id()}"):
        firmware.pin(other, "esp32", versions)
    assert firmware.load_versions(versions)["images"]["esp32"]["sha256"] is None


def test_a_pinned_image_of_older_code_is_refused(images, tmp_path):
    """lib/ changed since the image was pinned: the image carries other code than the checkout's, which
    deploy would refuse on the board; flash says so first."""
    files, _ = images
    versions = _versions_with(tmp_path, "esp32", sha256=hashlib.sha256(files["esp32"].read_bytes()).hexdigest(),
                              code_id="0123456789ab")
    with pytest.raises(firmware.ImageError, match=rf"carries code 0123456789ab, lib/ here is {bundle.code_id()}"):
        firmware.flash_image("esp32-devkitc-rc522", files["esp32"], versions)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-5000], "End of file reading segment"),
    (lambda b: b[:0x20000] + bytes([b[0x20000] ^ 0xFF]) + b[0x20001:], "does not match"),
    (lambda b: b[:0x5000], "too short"),
    (lambda b: b"\0" * len(b), "not a valid esp32 image"),
])
def test_pin_refuses_a_damaged_image(images, tmp_path, damage, message):
    files, _ = images
    bad = tmp_path / "bad.bin"
    bad.write_bytes(damage(files["esp32"].read_bytes()))
    versions = _versions_with(tmp_path, "esp32", sha256=None)
    with pytest.raises(firmware.ImageError, match=message):
        firmware.pin(bad, "esp32", versions)
    assert firmware.load_versions(versions)["images"]["esp32"]["sha256"] is None


def test_an_image_for_another_chip_is_refused(images, tmp_path):
    files, _ = images
    versions = _versions_with(tmp_path, "esp32", sha256=None)
    with pytest.raises(firmware.ImageError, match="esp32"):
        firmware.pin(files["esp32s3"], "esp32", versions)


def test_an_app_larger_than_its_partition_is_refused(images, tmp_path, monkeypatch):
    files, versions = images
    cfg = json.loads(json.dumps(bundle.board_config("esp32-devkitc-rc522")))
    cfg["flash"]["app_kb"] = 1024
    big = tmp_path / "big.bin"
    big.write_bytes(esp_images.firmware("esp32", app_size=1_100_000))
    versions = _versions_with(tmp_path, "esp32", sha256=hashlib.sha256(big.read_bytes()).hexdigest(),
                              code_id=bundle.code_id())
    monkeypatch.setattr(bundle, "board_config", lambda b: cfg)
    with pytest.raises(firmware.ImageError, match=r"does not fit the factory partition.*app_kb"):
        firmware.flash_image("esp32-devkitc-rc522", big, versions)


def test_flash_cli_dry_run_and_a_missing_port(images, tmp_path, monkeypatch, capsys):
    files, versions = images
    monkeypatch.setattr(firmware, "VERSIONS", versions)
    monkeypatch.setattr(firmware, "load_versions", lambda path=versions: json.loads(versions.read_text()))
    rc = cli.main(["flash", "--board", "esp32-devkitc-rc522", "--port", "/dev/ttyNONE", "--image",
                   str(files["esp32"]), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    steps = [ln for ln in out.splitlines() if ln.startswith("-- ")]
    assert [s.split(":")[0] for s in steps] == ["-- erase the whole flash (journal and filesystem included)",
                                              "-- write", "-- verify against the flash"]
    assert "write-flash --flash-size keep 0x1000" in steps[1] and "verify-flash 0x1000" in steps[2]
    assert "journal    data  undefined  0x0200000    960 KB" in out
    # A real esptool run against a port that is not there: a clear failure, nothing else attempted.
    rc = cli.main(["flash", "--board", "esp32-devkitc-rc522", "--port", str(tmp_path / "ttyNONE"), "--image",
                   str(files["esp32"])])
    err = capsys.readouterr().err
    assert rc == 3 and "esptool failed (erase the whole flash" in err
    # An unpinned image through the CLI: exit 2 and the way out.
    shutil.copy(files["esp32"], tmp_path / "other.bin")
    (tmp_path / "other.bin").open("ab").write(b"\xff")
    rc = cli.main(["flash", "--board", "esp32-devkitc-rc522", "--port", "x", "--image", str(tmp_path / "other.bin")])
    assert rc == 2 and "clockterm firmware pin --chip esp32" in capsys.readouterr().err
