"""A terminal config checked on the host: what the device refuses (its own validator, run on the unix
port), and more that only the host can know (fields nobody reads, the board's link, secrets left empty,
the CA's file). Time zones may be given as IANA names: the host turns them into the POSIX rule the
device runs on (tznames)."""

from __future__ import annotations

import difflib
import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import bundle, tznames

# Run by the device's own code: the fields it knows, then its verdict on the file.
_DEVICE_CHECK = """
import sys, json
from clockterm import config
print(json.dumps([f[0] for f in config._fields()]))
try:
    config.parse(config.read(sys.argv[1]))
    print("ok")
except config.ConfigError as e:
    print(str(e).replace("\\n", " "))
except OSError as e:
    print("config: cannot read %s (%s)" % (sys.argv[1], e))
"""


class ConfigCheckError(ValueError):
    """A config that cannot be used; the message names the field (or the file) and why."""


@dataclass
class Checked:
    """A config that passed: the document as the device gets it (tz as a rule) and notes for people."""

    doc: dict[str, Any]
    board: str
    notes: list[str] = field(default_factory=list)


def _device_check(path: Path) -> tuple[list[str], str]:
    """(the field paths the device knows, its verdict: "ok" or its error) for the file at path."""
    out = bundle.build("sim")  # the validator is the same on every board; the sim bundle runs here
    argv, env = bundle.launch(out, bundle.board_config("sim").get("heap", "100K"), _DEVICE_CHECK)
    r = subprocess.run([*argv, str(path)], capture_output=True, text=True, env=env, timeout=60)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or len(lines) < 2:
        raise ConfigCheckError(f"config: the device's validator failed: {(r.stderr or r.stdout).strip()[-300:]}")
    return json.loads(lines[0]), lines[-1]


def _read(path: Path) -> dict[str, Any]:
    # The file as JSON, refused with the reason a person can act on (CPython names line and column).
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigCheckError(f"config: cannot read {path}: {e.strerror}") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raise ConfigCheckError("config: starts with a byte order mark (save it as UTF-8 without one)")
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        raise ConfigCheckError(f"config: not UTF-8 text (byte {e.start})") from None
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ConfigCheckError(f"config: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ConfigCheckError(f"config: expected a JSON object, got {type(doc).__name__}")
    return doc


def _unknown(doc: dict[str, Any], known: list[str]) -> str | None:
    # The first field nobody reads, with the known one it most likely meant.
    sections = {p.split(".", 1)[0] for p in known if "." in p}
    for key, value in doc.items():
        if key in known:
            continue
        if key in sections and isinstance(value, dict):
            for sub in value:
                path = f"{key}.{sub}"
                if path not in known:
                    return _unknown_message(path, [p for p in known if p.startswith(key + ".")])
        elif key not in sections:
            return _unknown_message(key, [p for p in known if "." not in p] + sorted(sections))
    return None


def _unknown_message(path: str, candidates: list[str]) -> str:
    near = difflib.get_close_matches(path, candidates, n=1, cutoff=0.6)
    if not near:  # a field of a section given at the top, or the other way round
        near = difflib.get_close_matches(path.rsplit(".", 1)[-1], [c.rsplit(".", 1)[-1] for c in candidates],
                                         n=1, cutoff=0.75)
        near = [c for c in candidates if c.rsplit(".", 1)[-1] == near[0]][:1] if near else []
    hint = f" (did you mean {near[0]}?)" if near else ""
    return f"{path}: unknown field{hint}"


def check(path: Path, strict: bool = True) -> Checked:
    """Check the config file at path; raises ConfigCheckError naming the field.

    Always: what the device refuses, an unknown board, a time zone that is neither a rule nor a known
    IANA name. strict (`clockterm config --check`) also refuses fields the firmware does not know (the
    name it most likely meant suggested), an empty Wi-Fi SSID or password on a Wi-Fi board, an empty
    central client id or secret, a missing CA (and on the sim board a CA file that is not there)."""
    path = Path(path)
    doc = _read(path)
    notes: list[str] = []
    board = doc.get("board")
    if isinstance(board, str) and board:
        try:
            board_cfg = bundle.board_config(board)
        except SystemExit as e:  # its message lists the known boards
            raise ConfigCheckError(f"board: {e}") from None
    else:
        board_cfg = None
    tz = doc.get("tz")
    if isinstance(tz, str) and tznames.looks_like_name(tz):
        try:
            doc["tz"] = tznames.posix_rule(tz)
        except tznames.TZNameError as e:
            raise ConfigCheckError(f"tz: {e}") from None
        notes.append(f"tz: {tz} is {doc['tz']} (the rule the terminal runs on)")
    with tempfile.TemporaryDirectory() as tmp:
        target = path
        if notes:  # the device checks the config it will get: the rule, not the name
            target = Path(tmp) / "config.json"
            target.write_text(json.dumps(doc))
        known, verdict = _device_check(target)
    unknown = _unknown(doc, known) if strict else None
    if unknown:
        raise ConfigCheckError(unknown)
    if verdict != "ok":
        raise ConfigCheckError(verdict)
    assert board_cfg is not None  # the device refuses a config without a board
    if strict:
        _strict(doc, board, board_cfg, path)
    return Checked(doc, board, notes)


def _strict(doc: dict[str, Any], board: str, board_cfg: dict[str, Any], path: Path) -> None:
    net = doc.get("network") or {}
    if (board_cfg.get("network") or {}).get("type") == "wifi":
        if not net.get("wifi_ssid"):
            raise ConfigCheckError(f"network.wifi_ssid: empty, and board {board} connects over Wi-Fi")
        if net.get("wifi_password") == "":
            raise ConfigCheckError("network.wifi_password: empty (the network's password; null for an open network)")
    central = doc["central"]
    for key, what in (("client_id", "the device's id at the central"),
                      ("client_secret", "the secret the central keeps for this device")):
        if not central.get(key):
            raise ConfigCheckError(f"central.{key}: empty ({what})")
    ca = central.get("ca")
    if not ca:
        raise ConfigCheckError("central.ca: missing (the central's CA certificate: a terminal trusts nothing else)")
    if board == "sim":
        file = Path(ca) if Path(ca).is_absolute() else path.resolve().parent / ca
        if not file.is_file():
            raise ConfigCheckError(f"central.ca: no file {file} (a relative path is read beside the config)")
