"""Board configs: every shipped config validates; crafted bad ones are rejected naming field and pin."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from clockterm_host import boards

CONFIGS = boards.all_boards()
REAL = [p for p in CONFIGS if json.loads(p.read_text()).get("chip") != "host"]


def test_there_are_at_least_four_real_boards() -> None:
    assert len(REAL) >= 4
    chips = {json.loads(p.read_text())["chip"] for p in REAL}
    assert {"esp32", "esp32s3"} <= chips
    kinds = {json.loads(p.read_text())["reader"]["type"] for p in REAL}
    assert {"wiegand", "mfrc522", "rdm6300"} <= kinds
    nets = {json.loads(p.read_text())["network"]["type"] for p in REAL}
    assert nets == {"wifi", "ethernet"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_validates(path: Path) -> None:
    cfg = boards.check_file(path)
    assert cfg["board"] == path.stem


def test_cli_reports_ok_for_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert boards.main([]) == 0
    out = capsys.readouterr().out
    assert all(f"{p.name}: ok" in out for p in CONFIGS)


def _base(name: str = "esp32-devkitc-rc522") -> dict:
    return json.loads((boards.CONFIG_DIR / f"{name}.json").read_text())


def _set(cfg: dict, dotted: str, value: object) -> None:
    node = cfg
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node[p]
    if value is _DEL:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value


_DEL = object()

# (base board, mutation, substrings that must all appear in one error message)
BAD: list[tuple[str, Callable[[dict], None], list[str]]] = [
    ("esp32-devkitc-rc522", lambda c: _set(c, "indicators.buzzer", 34),
     ["indicators.buzzer", "GPIO34", "input-only"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "reader.cs", 36), ["reader.cs", "GPIO36", "input-only"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "indicators.led_ok", 9),
     ["indicators.led_ok", "GPIO9", "flash"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "indicators.led_ok", 20),
     ["indicators.led_ok", "GPIO20", "not exist"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "indicators.led_ok", 40),
     ["indicators.led_ok", "GPIO40", "not exist"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "indicators.led_err", 25),
     ["indicators.led_err", "GPIO25", "twice", "indicators.buzzer"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "indicators.led_err", 12),
     ["indicators.led_err", "GPIO12", "strapping"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "indicators.led_err", 2),
     ["indicators.led_err", "GPIO2", "strapping"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "allow_pins", {"0": "the BOOT button, pulled up on the board"}),
     ["reader.cs", "GPIO5", "strapping"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "indicators.led_err", 1),
     ["indicators.led_err", "GPIO1", "console"]),
    ("esp32-devkitc-rc522", lambda c: c["allow_pins"].update({"13": "not used at all here"}),
     ["allow_pins.13", "not used"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "module", "esp32-wrover") or _set(c, "indicators.led_ok", 16),
     ["indicators.led_ok", "GPIO16", "esp32-wrover"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "reader.type", "pn532"), ["reader.type", "pn532"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "reader.miso", "19"), ["reader.miso", "integer"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "reader.cs", _DEL), ["reader", "missing required field 'cs'"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "reader.irq_pin", 4), ["reader.irq_pin", "unknown field"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "colour", "red"), ["colour", "unknown field"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "chip", "esp8266"), ["chip", "esp8266"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "heap", "100KB"), ["heap", "does not match"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "network", _DEL) or _set(c, "network", None), ["network"]),
    ("esp32-devkitc-rc522", lambda c: c.pop("safe_mode_pin"), ["missing required field 'safe_mode_pin'"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "flash.journal.backend", "fat"),
     ["flash.journal.backend", "fat"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "flash.journal.size_kb", 2048),
     ["flash.journal.size_kb", "4096 KB"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "watchdog_ms", 100), ["watchdog_ms", "minimum"]),
    ("esp32-devkitc-rc522", lambda c: _set(c, "board", "other-name"), ["board", "file name"]),
    ("olimex-esp32-poe-wiegand", lambda c: _set(c, "reader.d0", 22),
     ["reader.d0", "GPIO22", "twice", "network.rmii[GPIO22]"]),
    ("olimex-esp32-poe-wiegand", lambda c: _set(c, "network.ref_clk", 0),
     ["network.ref_clk", "GPIO0", "strapping"]),
    ("olimex-esp32-poe-wiegand", lambda c: _set(c, "network.mdc", 35),
     ["network.mdc", "GPIO35", "input-only"]),
    ("olimex-esp32-poe-wiegand", lambda c: _set(c, "reader.d1", 39), ["reader.d1", "GPIO39", "pull-up"]),
    ("olimex-esp32-poe-wiegand", lambda c: _set(c, "reader.bits", [26, 30]), ["reader.bits[1]", "30"]),
    ("olimex-esp32-poe-wiegand", lambda c: _set(c, "network.phy", "W5500"), ["network.phy", "W5500"]),
    ("esp32-s3-devkitc-uart", lambda c: _set(c, "indicators.led_ok", 23),
     ["indicators.led_ok", "GPIO23", "esp32s3"]),
    ("esp32-s3-devkitc-uart", lambda c: _set(c, "indicators.led_ok", 45),
     ["indicators.led_ok", "GPIO45", "strapping"]),
    ("esp32-s3-devkitc-uart", lambda c: _set(c, "reader.rx", 30), ["reader.rx", "GPIO30", "flash"]),
    ("esp32-s3-devkitc-uart", lambda c: _set(c, "indicators.display.sda", 19),
     ["indicators.display.sda", "GPIO19", "console"]),
    ("esp32-s3-devkitc-uart", lambda c: _set(c, "indicators.display.addr", 0x3E),
     ["indicators.display.addr", "62"]),
    ("esp32-s3-devkitc-uart",
     lambda c: _set(c, "indicators.buzzer", 35) or _set(c, "module", "esp32-s3-wroom-1-octal"),
     ["indicators.buzzer", "GPIO35", "octal"]),
    ("esp32-s3-devkitc-uart", lambda c: _set(c, "network", _base("olimex-esp32-poe-wiegand")["network"]),
     ["network.type", "no Ethernet MAC"]),
    ("m5stack-atom-wiegand", lambda c: _set(c, "indicators.buzzer", 17),
     ["indicators.buzzer", "GPIO17", "esp32-pico-d4"]),
    ("m5stack-atom-wiegand", lambda c: _set(c, "module", "esp32-s3-wroom-1"), ["module", "esp32s3"]),
]


@pytest.mark.parametrize("base,mutate,needles", BAD, ids=[f"{i}-{b[2][0]}" for i, b in enumerate(BAD)])
def test_bad_config_rejected_naming_field(base: str, mutate: Callable[[dict], None], needles: list[str],
                                          tmp_path: Path) -> None:
    cfg = copy.deepcopy(_base(base))
    assert boards.validate(cfg) == []  # the base is good: the mutation alone makes it bad
    mutate(cfg)
    name = cfg.get("board") if isinstance(cfg.get("board"), str) and cfg["board"] != "other-name" else base
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(boards.BoardConfigError) as ei:
        boards.check_file(path)
    errs = ei.value.errors
    assert any(all(n in e for n in needles) for e in errs), errs


def test_unreadable_and_non_object_configs(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(boards.BoardConfigError, match="cannot read"):
        boards.check_file(p)
    p.write_text("[1, 2]")
    with pytest.raises(boards.BoardConfigError, match="not of type object"):
        boards.check_file(p)


def test_cli_exit_code_on_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _base()
    cfg["indicators"]["buzzer"] = 7
    p = tmp_path / "esp32-devkitc-rc522.json"
    p.write_text(json.dumps(cfg))
    assert boards.main([str(p)]) == 1
    assert "indicators.buzzer: GPIO7 is wired to the SPI flash" in capsys.readouterr().err


def test_pin_uses_cover_every_pin_field_of_the_schema() -> None:
    # A pin field added to the schema must get a direction in PIN_FIELDS, or its rules go unchecked.
    schema = boards.load_schema()

    def walk(node: object, path: str, out: set[str]) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref in ("#/$defs/pin", "#/$defs/pin_or_null"):
                out.add(path)
                return
            if ref:
                walk(boards._resolve(schema, ref), path, out)
            for k, v in node.get("properties", {}).items():
                walk(v, f"{path}.{k}" if path else k, out)
            for alt in node.get("oneOf", []):
                walk(alt, path, out)

    found: set[str] = set()
    walk(schema, "", found)
    assert found and found <= set(boards.PIN_FIELDS)



@pytest.mark.parametrize("path", REAL, ids=[p.stem for p in REAL])
def test_real_board_builds_on_the_esp32_board_layer(path: Path) -> None:
    # The shipped config against lib/clockterm/boards/esp32.py with the machine/network stand-ins
    # (tests/board_esp32_mp.py).
    from mp import mp_json, script

    fakes = str(Path(__file__).resolve().parent / "fakes")
    cfg = json.loads(path.read_text())
    term = {"network": {"wifi_ssid": "shop", "wifi_password": "pw", "static_ip": None}}
    out = mp_json(script("board_esp32_mp.py", {"CASE": "build", "FAKES": fakes, "BOARD": json.dumps(cfg),
                                                "TERM": json.dumps(term)}, "main()"))
    kind, _cls, polled, has_display = out
    assert kind == cfg["reader"]["type"]
    assert polled is None
    assert has_display == (cfg["indicators"]["display"] is not None)
