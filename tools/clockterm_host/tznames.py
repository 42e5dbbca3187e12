"""Time zones by name: `Europe/Berlin` -> the POSIX TZ rule the terminal runs on (`CET-1CEST,M3.5.0,M10.5.0/3`).

The terminal carries no zone database: it takes a POSIX TZ string (lib/clockterm/tz.py). People name
zones as IANA names, so the host turns a name into its rule. The rule is the footer of the zone's
TZif file (RFC 8536, version 2 and later): the string that applies after the file's last transition,
which is today's rule for every zone that still follows one. Read from the system's zoneinfo
(Debian's tzdata, installed by `make setup`) or, when that is missing, from the `tzdata` PyPI package.
"""

from __future__ import annotations

import re
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$")


class TZNameError(ValueError):
    """A time zone that is neither a known IANA name nor a POSIX TZ rule."""


def _tzif(name: str) -> bytes | None:
    for root in (Path("/usr/share/zoneinfo"),):
        p = root / name
        if p.is_file():
            return p.read_bytes()
    try:
        from importlib import resources

        parts = name.split("/")
        pkg = ".".join(["tzdata", "zoneinfo", *parts[:-1]])
        return resources.files(pkg).joinpath(parts[-1]).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, ValueError):
        return None


def posix_rule(name: str) -> str:
    """The POSIX TZ rule of IANA zone `name`; raises TZNameError for an unknown name."""
    if not _NAME.match(name) or ".." in name:
        raise TZNameError(f"{name!r} is not a time zone name")
    data = _tzif(name)
    if data is None or not data.startswith(b"TZif"):
        raise TZNameError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin, "
                          "or a POSIX rule such as CET-1CEST,M3.5.0,M10.5.0/3)")
    if data[4:5] in (b"\0", b""):
        raise TZNameError(f"time zone {name!r}: its zoneinfo file is version 1 and carries no rule")
    footer = data.rstrip(b"\n").rsplit(b"\n", 1)[-1].decode("ascii", "replace")
    if not footer:
        raise TZNameError(f"time zone {name!r} has no fixed rule to follow (its zoneinfo file ends without one)")
    return footer


def looks_like_name(tz: str) -> bool:
    """True for an IANA-style name (`Europe/Berlin`, `UTC`), False for what reads as a POSIX rule."""
    # A POSIX rule always holds a digit (its UTC offset), and a "/" only in its DST part, after a ",".
    return "," not in tz and ("/" in tz or not any(c.isdigit() for c in tz))


def resolve(tz: str) -> str:
    """A time zone as the config takes it: a name becomes its POSIX rule, a rule passes unchanged."""
    return posix_rule(tz) if looks_like_name(tz) else tz
