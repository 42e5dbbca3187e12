# Terminal configuration: load, validate field by field, keep the last good one in force.
#
# The config is one JSON document (on the board /config.json; on the host a file given to `run`).
# Every field is checked against _SPEC below; an error names the field by its dotted path
# ("sntp.port: expected int, got str"). On the device a config that fails keeps the last good one
# (saved beside it after each successful load) in force and the error is reported in the status.

import json
from micropython import const

# Field kinds. Numbers are checked against (min, max); strings against (min_len, max_len).
_INT = const(1)
_NUM = const(2)
_STR = const(3)
_BOOL = const(4)
_STRS = const(5)  # list of strings
_DICT = const(6)  # free-form object, checked by the module that owns it
_TOKENS = const(7)  # list of {"sha256": hex, "scopes": [str], "name": str} (or {"token": str, "scopes"})

_OPT = const(0x100)  # flag: field may be absent (then the default applies) or null

# One field per line: dotted path, kind (int num str bool strs dict tokens; "?": may be absent or null,
# then the default applies), a, b (numbers: min and max; strings and lists: min and max length) and, for
# a string, the values allowed (comma-separated). One string constant: the bytes stay in flash (a tuple
# of tuples would be built in the heap at every import, some 4 KB).
_SPEC = const(
    "version int 1 1\n"
    "board str 1 40\n"
    "device_id str 1 64\n"
    "tz str 3 80\n"
    "sntp.servers strs 1 8\n"
    "sntp.port int 1 65535\n"
    "sntp.interval_s int 16 86400\n"  # at most a day: the clock re-anchors its ticks at syncs
    "sntp.samples int 1 8\n"
    "sntp.timeout_ms int 50 10000\n"
    "sntp.max_offset_ms int 1 86400000\n"
    "sntp.stale_after_s int 60 2592000\n"
    "sntp.min_poll_s int? 1 3600\n"
    "sntp.burst_gap_ms int? 10 60000\n"
    "sntp.owned strs? 0 8\n"
    "sntp.panic_ms int? 0 86400000\n"
    "sntp.stepout_s int? 1 86400\n"
    "central.url str 8 200\n"
    "central.client_id str 0 64\n"
    "central.client_secret str 0 128\n"
    "central.ca str? 0 200\n"
    "central.batch_max int 1 1000\n"
    "central.interval_s int 1 86400\n"
    "endpoint.port int 0 65535\n"
    "endpoint.tokens tokens 0 16\n"
    "terminal.duplicate_window_s int 0 3600\n"
    "terminal.unknown_badge str 1 10 record,deny\n"
    "terminal.kind_mode str 1 10 toggle,in,out,keys\n"
    "terminal.shift_max_h int? 1 72\n"  # the work-day rule: an IN older than this no longer counts
    "journal.full_policy str 1 10 refuse,overwrite\n"
    "network.wifi_ssid str? 0 32\n"
    "network.wifi_password str? 0 64\n"
    "network.static_ip str? 7 18\n"
    "network.gateway str? 7 15\n"
    "network.dns str? 7 15\n"
    "sim.control_port int? 0 65535\n"
    "sim.rtc_offset_ms int? -1000000000000 1000000000000\n"
    "sim.rtc_drift_ppm num? -1000 1000\n"
    "sim.rtc_battery bool? 0 0\n"
    "sim.journal_kb int? 16 65536\n"
)

# Indexed by kind.
_KIND_WORDS = const(("", "int", "num", "str", "bool", "strs", "dict", "tokens"))
_TYPE_NAMES = const(("", "int", "number", "string", "bool", "list of strings", "object", "list of tokens"))
_SCOPES = const(("read", "admin"))


class ConfigError(ValueError):
    """A config that cannot be used; the message names the field."""


def _fields():
    # (path, kind | flags, a, b, allowed values or None) for each line of _SPEC, parsed as it goes.
    i = 0
    while i < len(_SPEC):
        j = _SPEC.index("\n", i)
        w = _SPEC[i:j].split()
        i = j + 1
        k = w[1]
        kind = _KIND_WORDS.index(k.rstrip("?")) | (_OPT if k[-1] == "?" else 0)
        yield w[0], kind, int(w[2]), int(w[3]), tuple(w[4].split(",")) if len(w) > 4 else None


def _type_name(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "object"
    return "other"


def _check(path, kind, a, b, allowed, v):
    base = kind & 0xFF
    bad = "%s: expected %s, got %s" % (path, _TYPE_NAMES[base], _type_name(v))
    if base == _BOOL:
        if not isinstance(v, bool):
            raise ConfigError(bad)
        return
    if base in (_INT, _NUM):
        if isinstance(v, bool) or not (isinstance(v, int) or (base == _NUM and isinstance(v, float))):
            raise ConfigError(bad)
        if not a <= v <= b:
            raise ConfigError("%s: %s is out of range %s..%s" % (path, v, a, b))
        return
    if base == _STR:
        if not isinstance(v, str):
            raise ConfigError(bad)
        if not a <= len(v) <= b:
            raise ConfigError("%s: length %d is out of range %d..%d" % (path, len(v), a, b))
        if allowed and v not in allowed:
            raise ConfigError("%s: %r is not one of %s" % (path, v, ", ".join(allowed)))
        return
    if base == _STRS:
        if not isinstance(v, list):
            raise ConfigError(bad)
        if not a <= len(v) <= b:
            raise ConfigError("%s: needs %d..%d entries, has %d" % (path, a, b, len(v)))
        for i, s in enumerate(v):
            if not isinstance(s, str) or not s:
                raise ConfigError("%s[%d]: expected a non-empty string, got %s" % (path, i, _type_name(s)))
        return
    if base == _TOKENS:
        if not isinstance(v, list) or len(v) > b:
            raise ConfigError("%s: expected a list of at most %d tokens" % (path, b))
        for i, t in enumerate(v):
            p = "%s[%d]" % (path, i)
            if not isinstance(t, dict):
                raise ConfigError("%s: expected an object, got %s" % (p, _type_name(t)))
            tok = t.get("token")
            if "sha256" in t:  # the stored form: the token's SHA-256, the token itself shown once and kept nowhere
                h = t["sha256"]
                if not isinstance(h, str) or len(h) != 64 or h.strip("0123456789abcdef"):
                    raise ConfigError("%s.sha256: expected 64 lowercase hex digits" % p)
            elif not isinstance(tok, str) or len(tok) < 16:
                raise ConfigError("%s.token: expected a string of at least 16 characters" % p)
            scopes = t.get("scopes")
            if not isinstance(scopes, list) or not scopes or any(s not in _SCOPES for s in scopes):
                raise ConfigError("%s.scopes: expected a non-empty list of %s" % (p, ", ".join(_SCOPES)))
        return
    if base == _DICT and not isinstance(v, dict):
        raise ConfigError(bad)


def validate(doc):
    """Check a parsed config; raise ConfigError naming the first bad field. Returns doc."""
    if not isinstance(doc, dict):
        raise ConfigError("config: expected a JSON object, got %s" % _type_name(doc))
    for path, kind, a, b, allowed in _fields():
        v = doc
        for part in path.split("."):  # a missing parent object counts as a missing field
            v = v.get(part) if isinstance(v, dict) else None
        if v is None:
            if kind & _OPT:
                continue
            raise ConfigError("%s: missing" % path)
        _check(path, kind, a, b, allowed, v)
    from clockterm import tz  # the terminal imports it anyway; a bad rule must not pass as a string

    try:
        tz.TZ(doc["tz"])
    except ValueError as e:
        raise ConfigError("tz: %s" % e)
    url = doc["central"]["url"]
    if not (url.startswith("https://") or url.startswith("http://")):
        raise ConfigError("central.url: must start with https:// (or http:// for a lab)")
    return doc


# What the central may set over the local config (docs/uplink.md, "Config"): policy, never provisioning
# (device id, Wi-Fi, credentials, CA, URL). A path ending in "." allows every field of that section.
_OVERLAY = const(("tz", "terminal.", "journal.full_policy", "sntp.servers", "sntp.interval_s", "central.batch_max",
           "central.interval_s"))


def _overlay_field(path, v):
    # Refuse a field the central may not set, or a value of the wrong kind (null included).
    for allowed in _OVERLAY:
        if path == allowed or (allowed[-1] == "." and path.startswith(allowed)):
            break
    else:
        raise ConfigError("%s: not allowed from central (only %s)" % (path, ", ".join(_OVERLAY).replace(".,", ".*,")))
    for p, kind, a, b, choices in _fields():
        if p == path:
            _check(path, kind, a, b, choices, v)
            return
    raise ConfigError("%s: not a config field" % path)


def merge_overlay(local, overlay):
    """The local config with the central's overlay laid over it, validated; local is not changed.

    overlay is a parsed object of the _OVERLAY fields, nested like the config ({"terminal":
    {"duplicate_window_s": 30}, "tz": "..."}). Raises ConfigError naming the first refused field."""
    if not isinstance(overlay, dict):
        raise ConfigError("overlay: expected a JSON object, got %s" % _type_name(overlay))
    doc = dict(local)  # shallow: a section is copied only when the overlay touches it
    for key, v in overlay.items():
        if isinstance(v, dict):
            sec = doc.get(key)
            if not isinstance(sec, dict):
                _overlay_field(key, v)  # not a section: refused (or named as not a field)
            sec = dict(sec)
            for sub, sv in v.items():
                _overlay_field(key + "." + sub, sv)
                sec[sub] = sv
            doc[key] = sec
        else:
            if isinstance(doc.get(key), dict):
                raise ConfigError("%s: expected an object, got %s" % (key, _type_name(v)))
            _overlay_field(key, v)
            doc[key] = v
    return validate(doc)


def save_overlay(body, path, local_path, good_path=None):
    """The central's overlay (bytes, as pulled) checked over the local config and, when accepted,
    written to path through a temp file and a rename; not rewritten when its bytes are already there.

    Returns (CRC32 of the file before or None, CRC32 of body). Raises ConfigError naming the refused
    field, or when the local config cannot be read (nothing to check against); nothing is written."""
    import binascii

    try:
        overlay = json.loads(body)
    except ValueError:
        raise ConfigError("overlay: not valid JSON")
    # The local config (or its last good copy), parsed from the file as it is read: a running
    # terminal's heap may no longer hold its 1-3 KB of text in one piece.
    local = err = None
    for p in (local_path, good_path):
        if p:
            try:
                with open(p) as f:
                    try:
                        local = json.load(f)
                    except ValueError as e:
                        raise ConfigError("config: not valid JSON (%s)" % (e.args[0] if e.args else "syntax error"))
                validate(local)
                break
            except OSError as e:
                err = err or ConfigError("config: cannot read %s (%s)" % (p, e))
            except ConfigError as e:
                err = err or e
            local = None
    if local is None:
        raise ConfigError("local config unusable (%s)" % err)
    merge_overlay(local, overlay)
    local = overlay = None
    try:
        with open(path, "rb") as f:
            old = binascii.crc32(f.read(4097))
    except OSError:
        old = None
    crc = binascii.crc32(body)
    if crc != old:
        import os

        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(body)
        os.rename(tmp, path)
    return old, crc


def parse(text):
    """Parse and validate config text; ConfigError on broken JSON or a bad field."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ConfigError("config: not valid JSON (%s)" % (e.args[0] if e.args else "syntax error"))
    return validate(doc)


def _read(path):
    with open(path) as f:
        return f.read()


def load(path, good_path=None):
    """Load the config at path. Returns (config, error).

    On success the text is saved to good_path (when given) and error is None. When the config is
    broken and a last good copy exists, that copy is returned with the error that rejected the new
    one, so the terminal keeps working. With no good copy the ConfigError is raised.
    """
    err = None
    try:
        text = _read(path)
        doc = parse(text)
    except OSError as e:
        err = ConfigError("config: cannot read %s (%s)" % (path, e))
    except ConfigError as e:
        err = e
    if err is None:
        if good_path:
            _save_good(good_path, text)
        return doc, None
    if good_path:
        try:
            return parse(_read(good_path)), err
        except (OSError, ConfigError):
            pass
    raise err


def _save_good(good_path, text):
    # Write atomically (temp file, then rename) and only when it changed, to spare the flash.
    try:
        if _read(good_path) == text:
            return
    except OSError:
        pass
    import os

    tmp = good_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, good_path)
