"""Board config validation: board_configs/schema.json plus the chip's pin rules, before a config ships.

The schema is checked by a small JSON Schema validator for the keywords the schema uses (no extra
dependency); the pin rules know each chip: pins that do not exist, flash/PSRAM pins, input-only pins
used as outputs, strapping and console pins (an error unless listed in "allow_pins" with a reason),
pins used twice. Every message names the field path and the pin.

    python -m clockterm_host.boards [board-or-file ...]    # all of board_configs/ when none given
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import REPO

CONFIG_DIR = REPO / "board_configs"
SCHEMA_PATH = CONFIG_DIR / "schema.json"


@dataclass(frozen=True)
class Chip:
    name: str
    gpios: frozenset[int]
    flash: frozenset[int]  # wired to the SPI flash inside the module: never usable
    input_only: frozenset[int]
    strapping: frozenset[int]  # sampled at reset: usable only where the board keeps them at safe levels
    console: frozenset[int]  # UART0 REPL / USB-JTAG: using them takes the technician's console away
    rmii: frozenset[int] = frozenset()  # fixed pins of the internal Ethernet MAC (RMII)


CHIPS: dict[str, Chip] = {
    "esp32": Chip(
        "esp32",
        gpios=frozenset([*range(0, 20), 21, 22, 23, 25, 26, 27, *range(32, 40)]),
        flash=frozenset(range(6, 12)),
        input_only=frozenset(range(34, 40)),
        strapping=frozenset([0, 2, 5, 12, 15]),
        console=frozenset([1, 3]),
        rmii=frozenset([19, 21, 22, 25, 26, 27]),  # TXD0, TX_EN, TXD1, RXD0, RXD1, CRS_DV
    ),
    "esp32s3": Chip(
        "esp32s3",
        gpios=frozenset([*range(0, 22), *range(26, 49)]),
        flash=frozenset(range(26, 33)),
        input_only=frozenset(),
        strapping=frozenset([0, 3, 45, 46]),
        console=frozenset([19, 20, 43, 44]),  # USB D-/D+, UART0 TX/RX
    ),
    "esp32c3": Chip(
        "esp32c3",
        gpios=frozenset(range(0, 22)),
        flash=frozenset(range(12, 18)),
        input_only=frozenset(),
        strapping=frozenset([2, 8, 9]),
        console=frozenset([18, 19, 20, 21]),  # USB D-/D+, UART0 RX/TX
    ),
}

# Pins a module takes beyond the chip's own flash pins.
MODULE_RESERVED: dict[str, tuple[str, frozenset[int]]] = {
    "esp32-wroom-32": ("esp32", frozenset()),
    "esp32-wrover": ("esp32", frozenset([16, 17])),  # PSRAM
    "esp32-pico-d4": ("esp32", frozenset([16, 17])),  # the embedded flash
    "esp32-s3-wroom-1": ("esp32s3", frozenset()),
    "esp32-s3-wroom-1-octal": ("esp32s3", frozenset(range(33, 38))),  # octal flash/PSRAM
    "esp32-c3-mini-1": ("esp32c3", frozenset()),
}

# Direction of each pin field, by its path with list/bus parents: "in", "out" or "io".
PIN_FIELDS: dict[str, str] = {
    "reader.d0": "in",
    "reader.d1": "in",
    "reader.sck": "out",
    "reader.mosi": "out",
    "reader.miso": "in",
    "reader.cs": "out",
    "reader.rst": "out",
    "reader.rx": "in",
    "reader.tx": "out",
    "indicators.buzzer": "out",
    "indicators.led_ok": "out",
    "indicators.led_err": "out",
    "indicators.display.sda": "io",
    "indicators.display.scl": "io",
    "indicators.display.rst": "out",
    "network.mdc": "out",
    "network.mdio": "io",
    "network.power": "out",
    "network.ref_clk": "clk",  # direction from network.ref_clk_mode
    "safe_mode_pin": "in",
}

# Usable at most once per app partition table: a few KB for nvs, phy_init, otadata and alignment.
_TABLE_KB = 64
_DEFAULT_APP_KB = 1984  # MicroPython's ESP32 generic app partition (0x1F0000)


class BoardConfigError(ValueError):
    """A board config that does not validate; .errors lists every problem found."""

    def __init__(self, name: str, errors: list[str]):
        super().__init__(f"{name}: " + "; ".join(errors))
        self.errors = errors


# --- a small JSON Schema validator (draft 2020-12 subset used by schema.json) -----------------

_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is_type(v: Any, t: str) -> bool:
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(v, _TYPES[t])


def _resolve(root: dict, ref: str) -> dict:
    if not ref.startswith("#/"):
        raise ValueError(f"unsupported $ref {ref}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _where(path: str) -> str:
    return path or "(top level)"


def schema_errors(inst: Any, schema: dict, root: dict | None = None, path: str = "") -> list[str]:
    """Every way inst fails schema, each as 'field.path: message'."""
    root = root if root is not None else schema
    errs: list[str] = []
    if "$ref" in schema:
        errs += schema_errors(inst, _resolve(root, schema["$ref"]), root, path)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(inst, t) for t in types):
            return errs + [f"{_where(path)}: {json.dumps(inst)} is not of type {' or '.join(types)}"]
    if "const" in schema and inst != schema["const"]:
        errs.append(f"{_where(path)}: must be {json.dumps(schema['const'])}, not {json.dumps(inst)}")
    if "enum" in schema and inst not in schema["enum"]:
        errs.append(f"{_where(path)}: {json.dumps(inst)} is not one of {json.dumps(schema['enum'])}")
    if isinstance(inst, (int, float)) and not isinstance(inst, bool):
        if "minimum" in schema and inst < schema["minimum"]:
            errs.append(f"{_where(path)}: {inst} is below the minimum {schema['minimum']}")
        if "maximum" in schema and inst > schema["maximum"]:
            errs.append(f"{_where(path)}: {inst} is above the maximum {schema['maximum']}")
    if isinstance(inst, str):
        if "pattern" in schema and not re.search(schema["pattern"], inst):
            errs.append(f"{_where(path)}: {inst!r} does not match {schema['pattern']}")
        if "minLength" in schema and len(inst) < schema["minLength"]:
            errs.append(f"{_where(path)}: {inst!r} is shorter than {schema['minLength']}")
    if isinstance(inst, list):
        if "minItems" in schema and len(inst) < schema["minItems"]:
            errs.append(f"{_where(path)}: needs at least {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(inst):
                errs += schema_errors(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(inst, dict):
        props = schema.get("properties", {})
        pats = schema.get("patternProperties", {})
        for req in schema.get("required", []):
            if req not in inst:
                errs.append(f"{_where(path)}: missing required field {req!r}")
        for k, v in inst.items():
            sub = f"{path}.{k}" if path else k
            matched = False
            if k in props:
                matched = True
                errs += schema_errors(v, props[k], root, sub)
            for pat, psch in pats.items():
                if re.search(pat, k):
                    matched = True
                    errs += schema_errors(v, psch, root, sub)
            if not matched and schema.get("additionalProperties") is False:
                errs.append(f"{sub}: unknown field")
    if "not" in schema and not schema_errors(inst, schema["not"], root, path):
        errs.append(f"{_where(path)}: must not match {json.dumps(schema['not'])}")
    if "if" in schema and not schema_errors(inst, schema["if"], root, path):
        if "then" in schema:
            errs += schema_errors(inst, schema["then"], root, path)
    if "oneOf" in schema:
        errs += _one_of(inst, schema["oneOf"], root, path)
    return errs


def _one_of(inst: Any, alts: list[dict], root: dict, path: str) -> list[str]:
    results = [schema_errors(inst, a, root, path) for a in alts]
    ok = [r for r in results if not r]
    if len(ok) == 1:
        return []
    if len(ok) > 1:
        return [f"{_where(path)}: matches more than one alternative"]
    # Pick the alternative the object says it is (its "type" field) for a precise message.
    if isinstance(inst, dict) and "type" in inst:
        for a, r in zip(alts, results, strict=True):
            target = _resolve(root, a["$ref"]) if "$ref" in a else a
            if target.get("properties", {}).get("type", {}).get("const") == inst["type"]:
                return r
        kinds = []
        for a in alts:
            target = _resolve(root, a["$ref"]) if "$ref" in a else a
            c = target.get("properties", {}).get("type", {}).get("const")
            if c:
                kinds.append(c)
        return [f"{path}.type: {json.dumps(inst['type'])} is not one of {json.dumps(kinds)}"]
    return [f"{_where(path)}: matches none of the alternatives ({'; '.join(min(results, key=len))})"]


# --- pin rules ---------------------------------------------------------------------------------


def _get(cfg: dict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def pin_uses(cfg: dict) -> list[tuple[str, int, str]]:
    """(field path, pin, direction) for every pin the config uses, including fixed Ethernet pins."""
    uses = []
    for field, direction in PIN_FIELDS.items():
        pin = _get(cfg, field)
        if isinstance(pin, int) and not isinstance(pin, bool):
            if direction == "clk":
                direction = "out" if _get(cfg, "network.ref_clk_mode") == "out" else "in"
            uses.append((field, pin, direction))
    chip = CHIPS.get(cfg.get("chip", ""))
    net = cfg.get("network") or {}
    if chip and net.get("type") == "ethernet":
        for pin in sorted(chip.rmii):
            uses.append((f"network.rmii[GPIO{pin}]", pin, "io"))
    return uses


def pin_errors(cfg: dict) -> list[str]:
    chip = CHIPS.get(cfg.get("chip", ""))
    if chip is None:
        return []
    errs = []
    net = cfg.get("network") or {}
    if net.get("type") == "ethernet" and not chip.rmii:
        errs.append(f"network.type: {chip.name} has no Ethernet MAC (SPI Ethernet is not supported yet)")
    reserved: frozenset[int] = frozenset()
    module = cfg.get("module")
    if module:
        mchip, reserved = MODULE_RESERVED[module]
        if mchip != chip.name:
            errs.append(f"module: {module} carries a {mchip}, not a {chip.name}")
    allowed: dict[str, str] = cfg.get("allow_pins") or {}
    seen: dict[int, str] = {}
    for field, pin, direction in pin_uses(cfg):
        if pin not in chip.gpios:
            errs.append(f"{field}: GPIO{pin} does not exist on the {chip.name}")
            continue
        if pin in chip.flash:
            errs.append(f"{field}: GPIO{pin} is wired to the SPI flash on the {chip.name}")
        if pin in reserved:
            errs.append(f"{field}: GPIO{pin} is taken by the {module} module (flash/PSRAM)")
        if direction != "in" and pin in chip.input_only:
            errs.append(f"{field}: GPIO{pin} is input-only on the {chip.name}, cannot be an output")
        if pin in chip.strapping and str(pin) not in allowed:
            errs.append(f"{field}: GPIO{pin} is a strapping pin of the {chip.name}; "
                        f"list it in allow_pins with the reason it is safe on this board")
        if pin in chip.console and str(pin) not in allowed:
            errs.append(f"{field}: GPIO{pin} is the {chip.name}'s console (UART0/USB); "
                        f"list it in allow_pins to give the console up")
        if pin in seen:
            errs.append(f"{field}: GPIO{pin} is used twice, also by {seen[pin]}")
        else:
            seen[pin] = field
    reader = cfg.get("reader") or {}
    if reader.get("type") == "wiegand" and not reader.get("external_pullup"):
        for f in ("d0", "d1"):
            pin = reader.get(f)
            if pin in chip.input_only:
                errs.append(f"reader.{f}: GPIO{pin} has no internal pull-up; Wiegand lines need one "
                            f"(set external_pullup: true when the board has resistors)")
    if reader.get("type") == "line" and reader.get("min_len", 4) > reader.get("max_len", 20):
        errs.append("reader.min_len: greater than reader.max_len")
    for pin in allowed:
        if int(pin) not in seen:
            errs.append(f"allow_pins.{pin}: GPIO{pin} is not used by this config")
    return errs


def flash_errors(cfg: dict) -> list[str]:
    flash = cfg.get("flash") or {}
    size_mb = flash.get("size_mb")
    if not isinstance(size_mb, int) or cfg.get("chip") == "host":
        return []
    journal = flash.get("journal") or {}
    app_kb = flash.get("app_kb", _DEFAULT_APP_KB)
    total = _TABLE_KB + app_kb + flash.get("fs_kb", 0) + journal.get("size_kb", 0)
    if total > size_mb * 1024:
        return [f"flash.journal.size_kb: partitions need {total} KB (table {_TABLE_KB}, app {app_kb}, "
                f"fs {flash.get('fs_kb', 0)}, journal {journal.get('size_kb', 0)}) but the flash has "
                f"{size_mb * 1024} KB"]
    return []


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def validate(cfg: Any, schema: dict | None = None) -> list[str]:
    """Every problem of a board config (schema, pins, flash layout); empty when it is fine."""
    errs = schema_errors(cfg, schema or load_schema())
    if errs or not isinstance(cfg, dict):
        return errs  # pin rules assume the shape the schema guarantees
    return pin_errors(cfg) + flash_errors(cfg)


def config_path(board_or_file: str) -> Path:
    p = Path(board_or_file)
    if p.suffix == ".json" and p.exists():
        return p
    return CONFIG_DIR / f"{board_or_file}.json"


def check_file(path: Path, schema: dict | None = None) -> dict:
    """The parsed config of a board file; raises BoardConfigError listing every problem."""
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BoardConfigError(path.name, [f"cannot read: {e}"]) from e
    errs = validate(cfg, schema)
    if not errs and cfg.get("board") != path.stem:
        errs = [f"board: {cfg.get('board')!r} differs from the file name {path.stem!r}"]
    if errs:
        raise BoardConfigError(path.name, errs)
    return cfg


def check(board: str) -> dict:
    """The validated config of board_configs/<board>.json (or a path to a .json file)."""
    return check_file(config_path(board))


def all_boards() -> list[Path]:
    return sorted(p for p in CONFIG_DIR.glob("*.json") if p.name != SCHEMA_PATH.name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("boards", nargs="*", help="board names or .json files (default: all of board_configs/)")
    args = ap.parse_args(argv)
    paths = [config_path(b) for b in args.boards] or all_boards()
    schema = load_schema()
    bad = 0
    for p in paths:
        try:
            check_file(p, schema)
            print(f"{p.name}: ok")
        except BoardConfigError as e:
            bad += 1
            for msg in e.errors:
                print(f"{p.name}: {msg}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
