"""`clockterm roster sync` against a real slapd on loopback: LDAPS and StartTLS with the CA verified,
paged reads past the server's page limit, disabled AD accounts left out, entries that cannot become rows
reported, the diff of a dry run, refusal of an empty or sharply smaller roster, then the roster at the
central (admin API), in a sim terminal's flash, or in a CSV file."""

from __future__ import annotations

import csv
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest
from clockterm_host import roster
from clockterm_host.central import Handle
from clockterm_host.cli import main as cli_main
from ldap_server import ADMIN, ADMIN_PW, PAGE_LIMIT, PEOPLE, READER, READER_PW, Slapd

N = 350  # people: more than three pages of the server's PAGE_LIMIT


def person(i: int) -> dict[str, object]:
    p: dict[str, object] = {"uid": f"u{i}", "employeeID": f"E{i:04d}", "badgeId": f"{0x04000000 + i:08X}",
                            "displayName": f"Person {i}" if i % 7 else f"Zoë Ünïcode {i}",
                            "userAccountControl": 514 if i % 25 == 0 else 512}  # 514: ACCOUNTDISABLE set
    return p


def people() -> list[dict[str, object]]:
    ps = [person(i) for i in range(N)]
    for i in range(7, N, 50):
        del ps[i]["badgeId"]  # no badge: left out, reported
    del ps[11]["employeeID"]
    del ps[12]["displayName"]
    ps[14]["badgeId"] = ps[13]["badgeId"]  # one badge on two people: both left out
    ps[15]["badgeId"] = str(ps[15]["badgeId"]).lower()  # folded to upper case
    ps[16]["badgeId"] = "ABC-123"  # not a badge id: left out with the rule
    ps[17]["badgeId"] = [ps[17]["badgeId"], "123:04567"]  # a card and a key fob: two rows
    ps[18]["employeeID"] = "E0019"  # an id on two entries: kept, reported
    ps[20]["userAccountControl"] = 66048  # enabled, password never expires (0x10200)
    ps[21]["userAccountControl"] = 66050  # disabled with other bits set (0x10202)
    return ps


DISABLED = len([i for i in range(N) if i % 25 == 0]) + 1  # and u21
KEPT = N - DISABLED - len(range(7, N, 50)) - 1 - 1 - 2 - 1 + 1  # missing badge/id/name, shared badge, bad badge


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    with Slapd(tmp_path_factory.mktemp("slapd"), people()) as s:
        yield s


def sync_args(s: Slapd, *more: str, url: str | None = None) -> list[str]:
    pw = s.d / "reader.pw"
    pw.write_text(READER_PW + "\n")
    return ["roster", "sync", "--ldap", url or s.ldaps_url, "--base", PEOPLE, "--filter", "(objectClass=inetOrgPerson)",
            "--badge-attr", "badgeId", "--id-attr", "employeeID", "--name-attr", "displayName",
            "--bind-dn", READER, "--password-file", str(pw), "--ca", str(s.ca_path), *more]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli_main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_dry_run_reports_pages_disabled_problems_and_diff(slapd: Slapd, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "roster.csv"
    rc, out, err = run(sync_args(slapd, "--csv-out", str(dest), "--dry-run", "--json"), capsys)
    assert rc == 0, err
    rep = json.loads(out[:out.rindex("}") + 1])
    assert rep["entries"] == N and rep["disabled"] == DISABLED
    assert rep["pages"] >= -(-N // PAGE_LIMIT) >= 4  # the server gives at most PAGE_LIMIT a page
    assert rep["badges"] == KEPT and rep["current"] is None and len(rep["added"]) == KEPT
    problems = "\n".join(rep["problems"])
    assert "uid=u7,ou=people,dc=example,dc=com: missing badge" in problems
    assert "uid=u11,ou=people,dc=example,dc=com: missing employee id" in problems
    assert "uid=u12,ou=people,dc=example,dc=com: missing name" in problems
    assert f"badge {0x04000000 + 13:08X}: on 2 entries, left out of all: uid=u13" in problems
    assert 'uid=u16,ou=people,dc=example,dc=com: badge "ABC-123": not a badge id' in problems
    assert rep["duplicated_ids"] == ["E0019: uid=u18,ou=people,dc=example,dc=com; uid=u19,ou=people,dc=example,dc=com"]
    added = {tuple(r) for r in rep["added"]}
    assert (f"{0x04000000 + 15:08X}", "E0015", "Person 15") in added  # lower case folded
    assert ("123:04567", "E0017", "Person 17") in added and (f"{0x04000000 + 17:08X}", "E0017", "Person 17") in added
    assert not any(r[1] in ("E0000", "E0021", "E0025") for r in added)  # disabled
    assert any(r[1] == "E0020" for r in added)
    assert out.rstrip().endswith("dry run: nothing changed") and not dest.exists()


def test_sync_to_the_central_then_a_smaller_directory(slapd: Slapd, central: Handle, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    to_central = ["--central", central.admin_url, "--central-state", str(central.state)]
    rc, out, err = run(sync_args(slapd, *to_central), capsys)
    assert rc == 0, err
    assert out.rstrip().endswith(f"central: {KEPT} badges stored for *"), out
    entries = central.store.roster("term-1")[1]
    assert len(entries) == KEPT and entries == sorted(entries, key=lambda e: e["badge"].encode())
    # Nothing changed in the directory: the diff is empty.
    rc, out, _ = run(sync_args(slapd, *to_central, "--dry-run"), capsys)
    assert rc == 0 and "added: 0, removed: 0, changed: 0" in out
    # A renamed person and a filter that matches a third of the people: the diff shows it; applying it is
    # refused as sharply smaller, and nothing changes at the central, unless forced.
    conn = ldap3.Connection(ldap3.Server("localhost", port=slapd.ldaps_port, use_ssl=True,
                                         tls=ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(slapd.ca_path))),
                            ADMIN, ADMIN_PW, auto_bind=True)
    conn.modify(f"uid=u30,{PEOPLE}", {"displayName": [(ldap3.MODIFY_REPLACE, ["Person Thirty"])]})
    conn.unbind()
    some = sync_args(slapd, *to_central)
    some[some.index("--filter") + 1] = "(|(uid=u1*)(uid=u30))"
    rc, out, err = run(some, capsys)
    assert rc == 2 and "fewer than the" in err and "refused" in err, err
    assert len(central.store.roster("term-1")[1]) == KEPT
    rc, out, _ = run([*some, "--dry-run"], capsys)
    assert rc == 0 and "  ~ 0400001E E0030 Person 30 -> E0030 Person Thirty" in out, out
    rc, out, err = run([*some, "--force"], capsys)
    assert rc == 0, err
    assert len(central.store.roster("term-1")[1]) < KEPT // 2
    # An empty result is refused even against an empty roster; forced, it empties it.
    empty = sync_args(slapd, *to_central)
    empty[empty.index("--filter") + 1] = "(uid=nobody)"
    rc, _, err = run(empty, capsys)
    assert rc == 2 and "empty roster" in err


def test_sync_into_a_sim_terminal_with_starttls(slapd: Slapd, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "term"
    rc, out, err = run(sync_args(slapd, "--sim-state", str(state), "--starttls", url=slapd.ldap_url), capsys)
    assert rc == 0, err
    assert out.rstrip().endswith(f"sim terminal: {KEPT} badges installed"), out
    rows = roster.read_sim(state)
    assert len(rows) == KEPT and ("123:04567", "E0017", "Person 17") in rows
    assert ("04000062", "E0098", "Zoë Ünïcode 9") in rows  # the terminal keeps 16 bytes of the name
    # Again: the names cut by the terminal count as unchanged.
    rc, out, _ = run(sync_args(slapd, "--sim-state", str(state), "--dry-run"), capsys)
    assert rc == 0 and "added: 0, removed: 0, changed: 0" in out, out


def test_sync_to_a_csv_file_reads_back(slapd: Slapd, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "roster.csv"
    assert run(sync_args(slapd, "--csv-out", str(dest)), capsys)[0] == 0
    rows = list(csv.reader(dest.open(newline="")))
    assert rows[0] == ["badge", "employee_id", "name"] and len(rows) == 1 + KEPT
    assert roster.read_csv(dest.read_bytes()) == [tuple(r) for r in rows[1:]]


@pytest.mark.parametrize(("change", "error"), [
    ("plain", "plain LDAP would carry names, badges and the bind password in clear"),
    ("wrong_ca", "certificate verify failed"),
    ("wrong_host", "doesn't match any name in ['127.0.0.1']"),
    ("bad_password", "invalidCredentials"),
    ("no_password", "--bind-dn needs a password"),
])
def test_connection_refusals(slapd: Slapd, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str,
                             error: str) -> None:
    args = sync_args(slapd, "--csv-out", str(tmp_path / "r.csv"))
    if change == "plain":
        args[args.index("--ldap") + 1] = slapd.ldap_url
    elif change == "wrong_ca":
        import trustme

        other = tmp_path / "other.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        args[args.index("--ca") + 1] = str(other)
    elif change == "wrong_host":  # the certificate names localhost, not 127.0.0.1
        args[args.index("--ldap") + 1] = f"ldaps://127.0.0.1:{slapd.ldaps_port}"
    elif change == "bad_password":
        (tmp_path / "bad.pw").write_text("nope")
        args[args.index("--password-file") + 1] = str(tmp_path / "bad.pw")
    else:
        i = args.index("--password-file")
        del args[i:i + 2]
    try:
        rc, out, err = run(args, capsys)
    except SystemExit as e:
        rc, err = 2, str(e.code)
    assert rc != 0 and error in err, err
    assert not (tmp_path / "r.csv").exists()
