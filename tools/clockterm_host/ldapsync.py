"""`clockterm roster sync`: the roster from a directory (LDAP, Active Directory), checked, diffed, applied.

Reads people with ldap3 over LDAPS or StartTLS (the server's certificate verified against a CA file or
the system's, its name checked; a plain ldap:// connection is refused), with the paged-results control
(Active Directory answers at most 1,000 entries a request), leaves out disabled Active Directory
accounts (userAccountControl bit 2, ACCOUNTDISABLE), and makes one roster row per badge value of each
person. Entries that cannot become a row (no badge, no employee id, no name, a value the terminal's
rules refuse, a badge two people carry) are left out and reported. The result is compared with the
roster in force at the destination (the central, a stopped sim terminal, or a CSV file): added,
removed, changed. A dry run stops there; otherwise an empty roster, or one sharply smaller than the
one in force (a filter typo, a directory answering half), is refused unless forced, and the roster is
sent: to the central's admin API (POST /roster), into the sim terminal's flash, or to the file.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from . import roster

PAGED_OID = "1.2.840.113556.1.4.319"  # RFC 2696 simple paged results
UAC_ACCOUNTDISABLE = 0x2  # userAccountControl: the account is disabled
PAGE_SIZE = 500  # entries asked per page (Active Directory's MaxPageSize is 1,000)
MAX_SHRINK = 0.10  # a new roster this much smaller than the one in force is refused unless forced

Rows = list[tuple[str, str, str]]


class SyncError(Exception):
    """The sync cannot go on (connection, TLS, bind, search, destination): the message says why."""


class Refused(SyncError):
    """The new roster is refused (empty, sharply smaller); --force overrides."""


@dataclass
class Directory:
    """Where and how to read people."""

    url: str  # ldaps://host[:port] or ldap://host[:port] with starttls
    base: str
    filter: str
    badge_attr: str
    id_attr: str
    name_attr: str
    bind_dn: str | None = None
    password: str | None = None
    ca_file: str | None = None  # None: the system's CAs
    starttls: bool = False
    page_size: int = PAGE_SIZE
    timeout_s: int = 30


@dataclass
class Result:
    """What the directory gave: rows to keep, what was left out and why, the diff to the roster in force."""

    rows: Rows = field(default_factory=list)
    entries: int = 0
    pages: int = 0
    disabled: int = 0
    problems: list[str] = field(default_factory=list)  # entries left out, one line each
    duplicated_ids: list[str] = field(default_factory=list)  # employee ids on more than one entry (kept)
    added: Rows = field(default_factory=list)
    removed: Rows = field(default_factory=list)
    changed: list[tuple[tuple[str, str, str], tuple[str, str, str]]] = field(default_factory=list)
    current: int | None = None  # badges in the roster in force (None: it has none)

    def report(self) -> str:
        lines = [f"directory: {self.entries} entries in {self.pages} page(s), {self.disabled} disabled (left out)",
                 f"roster: {len(self.rows)} badges (in force: {self.current if self.current is not None else 'none'})"]
        for title, items in (("left out", self.problems), ("employee id on more than one entry (kept)",
                                                          self.duplicated_ids)):
            if items:
                lines.append(f"{title}: {len(items)}")
                lines += [f"  {p}" for p in items]
        lines.append(f"added: {len(self.added)}, removed: {len(self.removed)}, changed: {len(self.changed)}")
        lines += [f"  + {b} {e} {n}" for b, e, n in self.added]
        lines += [f"  - {b} {e} {n}" for b, e, n in self.removed]
        lines += [f"  ~ {o[0]} {o[1]} {o[2]} -> {n[1]} {n[2]}" for o, n in self.changed]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"entries": self.entries, "pages": self.pages, "disabled": self.disabled, "badges": len(self.rows),
                "current": self.current, "problems": self.problems, "duplicated_ids": self.duplicated_ids,
                "added": self.added, "removed": self.removed, "changed": self.changed}


def _connect(d: Directory) -> Any:
    import ldap3
    from ldap3.core.exceptions import LDAPException

    u = urlsplit(d.url)
    if u.scheme not in ("ldaps", "ldap") or not u.hostname:
        raise SyncError(f"--ldap {d.url}: expected ldaps://host[:port] (or ldap://host[:port] with --starttls)")
    if u.scheme == "ldap" and not d.starttls:
        raise SyncError(f"--ldap {d.url}: plain LDAP would carry names, badges and the bind password in clear; "
                        "use ldaps:// or --starttls")
    if u.scheme == "ldaps" and d.starttls:
        raise SyncError("--starttls goes with ldap:// (ldaps:// is TLS from the start)")
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=d.ca_file, version=ssl.PROTOCOL_TLS_CLIENT,
                    sni=u.hostname)
    port = u.port or (636 if u.scheme == "ldaps" else 389)
    server = ldap3.Server(u.hostname, port=port, use_ssl=u.scheme == "ldaps", tls=tls, get_info=ldap3.NONE,
                          connect_timeout=d.timeout_s)
    conn = ldap3.Connection(server, user=d.bind_dn, password=d.password, read_only=True, raise_exceptions=True,
                            receive_timeout=d.timeout_s, auto_bind=ldap3.AUTO_BIND_NONE)
    try:
        conn.open()
        if d.starttls:
            conn.start_tls()
        conn.bind()
    except LDAPException as e:
        raise SyncError(f"{d.url}: {type(e).__name__}: {e}") from None
    return conn


def _values(attrs: dict[str, list[bytes]], name: str) -> list[str]:
    # An attribute's values as text (names are case-insensitive in LDAP).
    for k, v in attrs.items():
        if k.lower() == name.lower():
            return [x.decode("utf-8", "replace").strip() for x in v if x.strip()]
    return []


def read_directory(d: Directory) -> tuple[list[dict[str, Any]], int]:
    """Every entry of the search, page by page: ([{dn, badges, ids, names, uac}], pages). A server that
    refuses the page size (OpenLDAP's size.pr; Active Directory caps it silently) is asked again with
    half of it; d.page_size is left at the size used."""
    from ldap3.core.exceptions import LDAPAdminLimitExceededResult, LDAPException

    conn = _connect(d)
    attrs = [d.badge_attr, d.id_attr, d.name_attr, "userAccountControl"]
    out, pages, cookie = [], 0, None
    try:
        while True:
            try:
                conn.search(d.base, d.filter, attributes=attrs, paged_size=d.page_size, paged_cookie=cookie)
            except LDAPAdminLimitExceededResult:
                if pages or d.page_size <= 10:
                    raise
                d.page_size //= 2
                continue
            pages += 1
            for e in conn.response:
                if e.get("type") != "searchResEntry":
                    continue
                raw = e.get("raw_attributes", {})
                uac = _values(raw, "userAccountControl")
                out.append({"dn": e["dn"], "badges": _values(raw, d.badge_attr), "ids": _values(raw, d.id_attr),
                            "names": _values(raw, d.name_attr), "uac": uac[0] if uac else None})
            ctrl = (conn.result.get("controls") or {}).get(PAGED_OID)
            cookie = ctrl["value"]["cookie"] if ctrl else None
            if not cookie:
                break
    except LDAPException as e:
        raise SyncError(f"search under {d.base}: {type(e).__name__}: {e}") from None
    finally:
        conn.unbind()
    return out, pages


def build(entries: list[dict[str, Any]], board: str = "sim") -> Result:
    """The roster from directory entries, by the terminal's rules; what cannot be a row is reported."""
    res = Result(entries=len(entries))
    rows: list[roster.Row] = []
    where: dict[int, str] = {}  # row number -> the entry's DN
    for e in entries:
        try:
            uac = int(e["uac"]) if e["uac"] is not None else 0
        except ValueError:
            uac = 0
        if uac & UAC_ACCOUNTDISABLE:
            res.disabled += 1
            continue
        missing = [what for what, v in (("badge", e["badges"]), ("employee id", e["ids"]), ("name", e["names"]))
                   if not v]
        if missing:
            res.problems.append(f"{e['dn']}: missing {', '.join(missing)}")
            continue
        for b in e["badges"]:
            where[len(rows) + 1] = e["dn"]
            rows.append(roster.Row(len(rows) + 1, b, e["ids"][0], e["names"][0]))
    good, bad = roster.normalize(rows, board)
    res.problems += [f"{where[n]}: {msg}" for n, msg in bad]
    by_badge: dict[str, list[tuple[str, str, str, int]]] = {}
    for r in good:
        by_badge.setdefault(r[0], []).append(r)
    kept = []
    for badge, rs in by_badge.items():
        if len({where[r[3]] for r in rs}) > 1:
            res.problems.append(f"badge {badge}: on {len(rs)} entries, left out of all: "
                                + "; ".join(where[r[3]] for r in rs))
        else:
            kept.append(rs[0])
    ids: dict[str, set[str]] = {}
    for r in kept:
        ids.setdefault(r[1], set()).add(where[r[3]])
    res.duplicated_ids = [f"{emp}: {'; '.join(sorted(dns))}" for emp, dns in sorted(ids.items()) if len(dns) > 1]
    res.rows = roster.check([roster.Row(r[3], *r[:3]) for r in kept], board)
    return res


def diff(res: Result, current: Rows | None, names_cut: bool = False) -> None:
    """Fill in the diff of res.rows to the roster in force (names_cut: the current names are as a
    terminal keeps them, cut short, so a name that starts with the kept one is unchanged)."""
    res.current = None if current is None else len(current)
    old = {r[0]: r for r in current or []}
    new = {r[0]: r for r in res.rows}
    res.added = [new[b] for b in sorted(new.keys() - old.keys())]
    res.removed = [old[b] for b in sorted(old.keys() - new.keys())]
    for b in sorted(new.keys() & old.keys()):
        o, n = old[b], new[b]
        same_name = n[2].startswith(o[2]) if names_cut else n[2] == o[2]
        if o[1] != n[1] or not same_name:
            res.changed.append((o, n))


def guard(res: Result, max_shrink: float = MAX_SHRINK, force: bool = False) -> None:
    """Refuse an empty roster, or one more than max_shrink smaller than the one in force, unless forced."""
    if force:
        return
    if not res.rows:
        raise Refused("the directory gave an empty roster (every badge would be unknown): refused; check the "
                      "base and filter, or --force")
    if res.current and len(res.rows) < res.current * (1 - max_shrink):
        raise Refused(f"the new roster has {len(res.rows)} badges, {res.current - len(res.rows)} fewer than the "
                      f"{res.current} in force (more than {max_shrink:.0%}): refused; check the base and filter, "
                      "or --force")


class Central:
    """The central's admin API, for the roster of one scope (all devices, or one)."""

    def __init__(self, url: str, token: str, scope: str = "*") -> None:
        self.url, self.token, self.scope = url.rstrip("/"), token, scope

    def _call(self, method: str, path: str, body: bytes | None = None) -> Any:
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "text/csv; charset=utf-8"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            try:
                detail = json.loads(detail).get("detail", detail)
            except ValueError:
                pass
            raise SyncError(f"central {self.url}: HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise SyncError(f"central {self.url}: {getattr(e, 'reason', e)}") from None

    def current(self) -> Rows:
        doc = self._call("GET", "/roster?" + urlencode({"scope": self.scope}))
        return [tuple(r) for r in doc["rows"]]

    def put(self, rows: Rows) -> dict[str, Any]:
        return self._call("POST", "/roster?" + urlencode({"scope": self.scope}), roster.to_csv(rows).encode())


def sync(d: Directory, dest: str, *, central: Central | None = None, sim_state: Path | None = None,
         csv_out: Path | None = None, dry_run: bool = False, force: bool = False,
         max_shrink: float = MAX_SHRINK) -> tuple[Result, str]:
    """Read, build, diff and (unless dry_run) apply; returns the result and what was done."""
    entries, pages = read_directory(d)
    res = build(entries)
    res.pages = pages
    if dest == "central":
        assert central is not None
        diff(res, central.current())
    elif dest == "sim":
        assert sim_state is not None
        diff(res, roster.read_sim(sim_state), names_cut=True)
    else:
        assert csv_out is not None
        diff(res, roster.read_csv(csv_out.read_bytes()) if csv_out.exists() else None)
    if dry_run:
        return res, "dry run: nothing changed"
    guard(res, max_shrink, force)
    if dest == "central":
        ans = central.put(res.rows)  # type: ignore[union-attr]
        return res, f"central: {ans['stored']} badges stored for {ans['scope']}"
    if dest == "sim":
        n = roster.install_sim(sim_state, res.rows)  # type: ignore[arg-type]
        return res, f"sim terminal: {n} badges installed"
    csv_out.write_text(roster.to_csv(res.rows), encoding="utf-8")  # type: ignore[union-attr]
    return res, f"{csv_out}: {len(res.rows)} badges written"
