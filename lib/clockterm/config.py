# Terminal configuration: load, validate field by field, keep the last good one in force.
#
# The config is one JSON document (on the board /config.json; on the host a file given to `run`).
# Every field is checked against _SPEC below; an error names the field by its dotted path
# ("sntp.port: expected int, got str"). On the device a config that fails keeps the last good one
# (saved beside it after each successful load) in force and the error is reported in the status.
# A file is refused before it is parsed when it could not be a config or would take the heap: over
# _FILE_MAX_BYTES, not UTF-8, a byte order mark, a NUL, or more objects and lists than a config has
# (MicroPython's json takes heap for each level of nesting: a small file of "[[[[..." would need more
# than the board has). Fields the validator does not know are ignored here (a newer config on an older
# firmware); `clockterm config --check` refuses them on the host, with the name that was meant.

import json
from micropython import const

# Field kinds. Numbers are checked against (min, max); strings against (min_len, max_len).
_INT = const(1)
_NUM = const(2)
_STR = const(3)
_BOOL = const(4)
_STRS = const(5)  # list of strings
_DICT = const(6)  # free-form object, checked by the module that owns it
_ADDR = const(0)  # an address: not a kind of _SPEC (validate() checks these fields; a gives the form, see _check)
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
    "endpoint.allow_plain_http bool? 0 0\n"  # serve plain HTTP (no TLS): only when said so
    "endpoint.cert str? 1 200\n"  # TLS certificate and key files (PEM or DER), beside the config
    "endpoint.key str? 1 200\n"
    "endpoint.health_public bool? 0 0\n"  # /api/v1/health without a token
    "endpoint.connections int? 1 8\n"  # connections at once (3 when absent)
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

_FILE_MAX_BYTES = const(8192)  # a config (a few KB with 16 endpoint tokens) or the central's overlay
_CONTAINERS_MAX = const(100)  # objects and lists in one file (a full config has about 45)
_NET_ADDRS = const("network static_ip gateway dns")  # its fields that are IPv4 addresses (the first may carry /bits)
# Indexed by kind.
_KIND_WORDS = const(("", "int", "num", "str", "bool", "strs", "dict", "tokens"))
_TYPE_NAMES = const(("", "int", "number", "string", "bool", "list of strings", "object", "list of tokens"))
_SCOPES = const(("read", "admin"))
_REDACTED = const("<redacted>")  # a secret, as the endpoint shows the config (view)
_SECRETS = const("network wifi_password central client_secret")  # (section, field) pairs that are secrets


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
        # No control character: an escaped "\r\n" in a device id or a URL would end the line of a
        # request it goes into, and a NUL cuts it on the way to a C library
        b = v.encode()
        if b and (min(b) < 32 or b.find(b"\x7f") >= 0):
            raise ConfigError("%s: control character in the text" % path)
        return
    if base == _STRS:
        if not isinstance(v, list):
            raise ConfigError(bad)
        if not a <= len(v) <= b:
            raise ConfigError("%s: needs %d..%d entries, has %d" % (path, a, b, len(v)))
        for i, s in enumerate(v):
            if not isinstance(s, str) or not s:
                raise ConfigError("%s[%d]: expected a non-empty string, got %s" % (path, i, _type_name(s)))
            _check("%s[%d]" % (path, i), _STR, 1, 255, None, s)
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
            elif min(tok.encode()) < 32 or tok.encode().find(bytes((127,))) >= 0:
                raise ConfigError("%s.token: control character in the text" % p)
            scopes = t.get("scopes")
            if not isinstance(scopes, list) or not scopes or any(s not in _SCOPES for s in scopes):
                raise ConfigError("%s.scopes: expected a non-empty list of %s" % (p, ", ".join(_SCOPES)))
        return
    if base == _DICT and not isinstance(v, dict):
        raise ConfigError(bad)
    if base == _ADDR:
        # An address a board can connect to; a says which form: 0 an IPv4 address (a.b.c.d), 1 one with
        # "/bits" allowed (a static IP), 2 a host name (dot-separated labels of letters, digits and inner
        # '-') or an IPv4 address, with ":port" allowed
        host, n = v, None
        if a and ("/" if a == 1 else ":") in v:
            host, n = v.split("/" if a == 1 else ":", 1)
        parts = host.split(".")
        if n is not None and not (n.isdigit() and (int(n) <= 32 if a == 1 else 0 < int(n) < 65536)):
            ok = False
        elif a < 2 or host.replace(".", "").isdigit():
            ok = len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts)
        else:
            ok = 0 < len(host) <= 253
            for p in parts:  # (bytes: a str's characters would each be interned for good)
                p = p.encode()
                if not 0 < len(p) < 64 or p[0] == 45 or p[-1] == 45 or \
                        not all(48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c == 45 for c in p):
                    ok = False
        if not ok:
            raise ConfigError("%s: %r is not a usable address" % (path, v))


def validate(doc):
    """Check a parsed config; raise ConfigError naming the first bad field. Returns doc."""
    if not isinstance(doc, dict):
        raise ConfigError("config: expected a JSON object, got %s" % _type_name(doc))
    for path, kind, a, b, allowed in _fields():
        v = doc
        i = 0
        while v is not None and i < len(path):  # a missing parent object counts as a missing field
            if not isinstance(v, dict):  # a section that is not an object
                raise ConfigError("%s: expected object, got %s" % (path[:i - 1], _type_name(v)))
            j = path.find(".", i)
            j = len(path) if j < 0 else j
            v = v.get(path[i:j])
            i = j + 1
        if v is None:
            if kind & _OPT:
                continue
            raise ConfigError("%s: missing" % path)
        _check(path, kind, a, b, allowed, v)
    from clockterm import tz  # the terminal imports it anyway; a bad rule must not pass as a string

    try:
        tz.TZ(doc["tz"])
    except ValueError as e:
        raise ConfigError("tz: %s" % e) from None
    # Addresses: what a board could not connect to is refused here, not found out in the field
    url = doc["central"]["url"]
    if not url.startswith("https://"):
        raise ConfigError("central.url: must start with https:// (a terminal never sends unverified)")
    host = url[8:].split("/", 1)[0]
    if host[:1] == "[":  # [v6] or [v6]:port: hex digits and colons, then the port checked as a name's
        v, _, tail = host[1:].partition("]")
        try:
            int(v.replace(":", ""), 16)  # ("::" alone is no central's address)
            host = "v" + tail
        except ValueError:
            pass
    try:
        _check("central.url", _ADDR, 2, 0, None, host)
    except ConfigError:  # (the address as the URL has it, for the [v6] form too)
        raise ConfigError("central.url: %r is not a usable address" % url[8:].split("/", 1)[0]) from None
    for i, v in enumerate(doc["sntp"]["servers"]):
        _check("sntp.servers[%d]" % i, _ADDR, 2, 0, None, v)
    words = _NET_ADDRS.split()  # (names made here, not kept for good: heap, see docs/heap.md)
    net = doc.get(words[0]) or {}
    for key in words[1:]:
        if net.get(key) is not None:
            _check(words[0] + "." + key, _ADDR, key == words[1], 0, None, net[key])
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


def read(path, name="config"):
    """The bytes of a config file on flash (only _FILE_MAX_BYTES are read, whatever the file's size);
    ConfigError naming the file (`name`) when it is larger, OSError when it cannot be read."""
    with open(path, "rb") as f:
        # Its size first: read(n) takes n bytes of heap at once, and a running terminal's heap may not
        # have _FILE_MAX_BYTES in one piece (a config is a few KB)
        n = f.seek(0, 2)
        if n > _FILE_MAX_BYTES:
            raise ConfigError("%s: over %d bytes" % (name, _FILE_MAX_BYTES))
        f.seek(0)
        return f.read(n)


def loads(text, name="config"):
    """The JSON document in text (bytes-like or str), refused with a ConfigError naming it (`name`) and why
    when it is not UTF-8, starts with a byte order mark, holds a NUL, nests more objects and lists than
    a config has, or is not JSON."""
    # Looked at as bytes: a one-character string made at run time (a str's item, chr()) is an interned
    # name that MicroPython keeps for good (heap: see docs/heap.md)
    data = text.encode() if isinstance(text, str) else bytes(text)
    if data[:3] == bytes((0xEF, 0xBB, 0xBF)):
        raise ConfigError("%s: starts with a byte order mark (save it as UTF-8 without one)" % name)
    i = data.find(bytes(1))
    if i >= 0:
        raise ConfigError("%s: NUL byte at %d" % (name, i))
    try:
        text = data.decode()
    except UnicodeError:
        raise ConfigError("%s: not UTF-8 text" % name) from None
    data = None
    if text.count("[") + text.count("{") > _CONTAINERS_MAX:
        raise ConfigError("%s: more than %d objects and lists" % (name, _CONTAINERS_MAX))
    try:
        return json.loads(text)
    except ValueError as e:
        raise ConfigError("%s: not valid JSON (%s)" % (name, e.args[0] if e.args else "syntax error")) from None


def save_overlay(body, path, local_path, good_path=None):
    """The central's overlay (bytes, as pulled) checked over the local config and, when accepted,
    written to path through a temp file and a rename; not rewritten when its bytes are already there.

    Returns (CRC32 of the file before or None, CRC32 of body). Raises ConfigError naming the refused
    field, or when the local config cannot be read (nothing to check against); nothing is written."""
    import binascii
    import os

    overlay = loads(body, "overlay")
    # The local config (or its last good copy), parsed from the file as it is read: a running
    # terminal's heap may no longer hold its 1-3 KB of text in one piece. (Its size is looked at
    # first; a file changed since boot that nests deeper than a config fails with MemoryError.)
    local = err = None
    for p in (local_path, good_path):
        if p:
            try:
                if os.stat(p)[6] > _FILE_MAX_BYTES:
                    raise ConfigError("config: over %d bytes" % _FILE_MAX_BYTES)
                with open(p) as f:
                    try:
                        local = json.load(f)
                    except (ValueError, MemoryError) as e:  # UnicodeError is a ValueError
                        raise ConfigError("config: not valid JSON (%r)" % (e,)) from None
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
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(body)
        os.rename(tmp, path)
    return old, crc


def parse(text):
    """Parse and validate config text; ConfigError on broken JSON or a bad field."""
    return validate(loads(text))


def load(path, good_path=None, out=None):
    """Load the config at path. Returns (config, error).

    On success the text is saved to good_path (when given) and error is None; with `out` (a list) its
    bytes are appended there instead, for the caller to save once it has built what it needs (app.run
    does: the file's writes would leave holes in the boot's heap). When the config is broken and a
    last good copy exists, that copy is returned with the error that rejected the new one, so the
    terminal keeps working. With no good copy the ConfigError is raised.
    """
    err = None
    try:
        text = read(path)
        doc = parse(text)
    except OSError as e:
        err = ConfigError("config: cannot read %s (%s)" % (path, e))
    except ConfigError as e:
        err = e
    if err is None:
        if out is not None:
            out.append(text)
        elif good_path:
            _save_good(good_path, text)
        return doc, None
    if good_path:
        try:
            return parse(read(good_path, "last good config")), err
        except (OSError, ConfigError):
            pass
    raise err


def _save_good(good_path, data):
    # Write atomically (temp file, then rename) and only when it changed, to spare the flash.
    try:
        if read(good_path) == data:
            return
    except (OSError, ConfigError):
        pass
    import os

    tmp = good_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, good_path)


def view(data, body=None):
    """The config as the device endpoint shows and takes it. data: the bytes of the config in force.

    body None: that config with its secrets (_SECRETS, each token's hash) replaced by "<redacted>".
    body (a PUT's bytes): its config, parsed and checked (validate) after each "<redacted>" sent back is
    replaced by the secret in force (a token's by the hash of the token of its name), and a plaintext
    token by its SHA-256: what the device keeps. Raises ConfigError naming what is refused."""
    import binascii
    import hashlib

    doc = loads(data if body is None else body)
    value = None if body is None else loads(data)  # the config in force, whose secrets a PUT keeps
    if not isinstance(doc, dict):
        raise ConfigError("config: expected a JSON object, got %s" % _type_name(doc))
    w = _SECRETS.split()
    for i in range(0, len(w), 2):
        d = doc.get(w[i])
        if isinstance(d, dict) and d.get(w[i + 1]):
            if value is None:
                d[w[i + 1]] = _REDACTED
            elif d[w[i + 1]] == _REDACTED:
                d[w[i + 1]] = (value.get(w[i]) or {}).get(w[i + 1], "")
    k = "endpoint.tokens".split(".")  # (split at run time: "tokens" is not otherwise an interned name)
    d = doc.get(k[0])
    had = () if value is None else (value.get(k[0]) or {}).get(k[1]) or ()
    for i, t in enumerate(d.get(k[1]) or () if isinstance(d, dict) and isinstance(d.get(k[1]), list) else ()):
        if not isinstance(t, dict):
            continue
        if value is None:
            for name in ("sha256", "token"):
                if name in t:
                    t[name] = _REDACTED
            continue
        tok = None
        if t.get("sha256") == _REDACTED or t.get("token") == _REDACTED:  # sent back as GET showed it
            t.pop("token", None)
            t["sha256"] = _REDACTED
            for x in had:
                if t.get("name") and x.get("name") == t.get("name"):
                    tok = x.get("sha256") or x.get("token")
                    break
            else:
                raise ConfigError("endpoint.tokens[%d]: %s, and no token of that name in force" % (i, _REDACTED))
            if x.get("sha256"):
                t["sha256"] = tok
                tok = None
        elif isinstance(t.get("token"), str):
            tok = t.pop("token")
        if tok is not None:  # a plaintext token: only its hash is kept
            t["sha256"] = binascii.hexlify(hashlib.sha256(tok.encode()).digest()).decode()
    return doc if value is None else validate(doc)
