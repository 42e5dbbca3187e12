"""One roster rule set: every kind of bad row is refused alike by the CLI, the central (admin API and its
own CLI) and the terminal (which writes every row it pulls through the same rules), naming the row and
the rule; good rosters (a BOM, ';' as Excel writes it, case-folded badges) are taken alike, and the
central reports what it stored."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from clockterm_host import roster
from clockterm_host.central import Handle
from clockterm_host.central.cli import main as central_main
from clockterm_host.cli import main as cli_main
from mp import mp_json, script

HEAD = "badge,employee_id,name\n"
GOOD = HEAD + "04A1B2C3,E1,Ada Lovelace\n123:45678,E2,Grace Hopper\n"

# (case, CSV, the problem line as every side words it). Rows the terminal can see (not the file's own
# rules) are also written through the terminal's RosterWriter below.
ROW_CASES = [
    ("junk badge", HEAD + "04A1,E1,Ada\n:,E2,Bob\n", 'line 3: badge ":": not a badge id'),
    ("dash badge", HEAD + "04A1,E1,Ada\n-,E2,Bob\n", 'line 3: badge "-": not a badge id'),
    ("badge longer than any reader's", HEAD + "0123456789ABCDEF01234,E1,Ada\n", "line 2: badge "),
    ("facility:card not padded as readers print it", HEAD + "123:4567,E1,Ada\n", 'badge "123:4567": not a badge'),
    ("the same badge in two cases", HEAD + "ab12,E1,Ada\nAB12,E2,Bob\n",
     "line 3: badge AB12: twice (also on line 2; badges are compared in upper case)"),
    ("employee id over 12", HEAD + "04A1,E123456789012,Ada\n", 'line 2: employee_id "E123456789012": 1 to 12'),
    ("employee id with a space", HEAD + "04A1,E 1,Ada\n", 'line 2: employee_id "E 1": only letters'),
    ("no employee id", HEAD + "04A1,,Ada\n", 'line 2: employee_id "": 1 to 12'),
    ("no name", HEAD + "04A1,E1,\n", 'line 2: name "": 1 to 64 bytes'),
    ("name over 64 bytes", HEAD + "04A1,E1," + "ö" * 33 + "\n", "line 2: name "),
    ("control character in a name", HEAD + '04A1,E1,"Ada\tL"\n', 'line 2: name "Ada\\tL": a control character'),
]
FILE_CASES = [
    ("no name column", "badge,employee_id\n04A1,E1\n", "line 1: missing column(s) name"),
    ("empty file", "", "line 1: empty file"),
    ("unquoted comma in a name", HEAD + "04A1,E1,Lovelace, Ada\n", "line 2: 4 fields, the header has 3"),
    ("not UTF-8", (HEAD + "04A1,E1,Müller\n").encode("latin-1"), "line 2: not UTF-8 (byte 0xfc)"),
    ("UTF-16", (HEAD + "04A1,E1,Ada\n").encode("utf-16"), 'line 1: the file is UTF-16 ("Unicode text")'),
]
TOO_MANY = HEAD + "".join(f"{i:08X},E{i},N{i}\n" for i in range(10_001))
CASES = [*ROW_CASES, *FILE_CASES, ("more badges than a terminal holds", TOO_MANY,
                                   "10001 badges: more than 10000 badges (the most a terminal holds)")]


def _bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode()


def admin_post(h: Handle, path: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(h.admin_url + path, data=body, method="POST",
                                 headers={"Authorization": f"Bearer {h.admin_token}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize(("case", "text", "problem"), CASES, ids=[c[0] for c in CASES])
def test_bad_roster_refused_by_cli_and_central_alike(case: str, text: str | bytes, problem: str, central: Handle,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    central.store.import_roster_csv(GOOD)
    before = central.store.roster("term-1")
    path = tmp_path / "roster.csv"
    path.write_bytes(_bytes(text))
    # the CLI, before anything leaves it
    assert cli_main(["roster", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert problem in err, err
    # the central's admin API: 400, the problems listed, nothing stored
    st, body = admin_post(central, "/roster", _bytes(text))
    assert st == 400 and body["error"] == "bad_roster", body
    assert any(problem in p for p in body["problems"]), body
    # the central's own CLI
    with pytest.raises(SystemExit) as e:
        central_main(["central", "roster", "import", "--state", str(central.state), str(path)])
    assert problem in str(e.value.code)
    assert central.store.roster("term-1") == before


def test_terminal_refuses_the_same_rows(tmp_path: Path) -> None:
    # The rows of each case as a central that does not check would send them (sorted as the device
    # compares badges), written through the terminal's RosterWriter, as its roster pull does
    # (tests/roster_rules_mp.py).
    cases = []
    for _case, text, _problem in ROW_CASES:
        lines = [ln for ln in roster.parse_csv(text)]
        cases.append(sorted(([r.badge, r.employee_id, r.name] for r in lines),
                            key=lambda r: r[0].strip().upper().encode()))
    out = mp_json(script("roster_rules_mp.py", {"P": str(tmp_path / "roster.bin"), "CASES": cases}, "main()"))
    for (case, _text, problem), got in zip(ROW_CASES, out, strict=True):
        rule = problem.split(": ", 1)[1] if problem.startswith("line ") else problem
        rule = rule.split(" (also on line")[0]  # the host names both lines of a duplicate; the terminal one
        assert got.startswith("row ") and rule in got, (case, got)
    assert not (tmp_path / "roster.bin").exists() and not (tmp_path / "roster.bin.new").exists()


def test_good_rosters_are_taken_alike(central: Handle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Excel's "CSV UTF-8" (a BOM), ';' where ',' is the decimal mark, header words in any case, extra
    # columns, blank lines, lower-case badges: one roster, stored as the terminal stores it.
    excel = ("\ufeffBadge;Employee ID;Name;Department\r\n04a1b2c3;E1;Ada Lovelace;R&D\r\n\r\n"
             "123:45678;E2;Grace Hopper;Ops\r\n")
    path = tmp_path / "excel.csv"
    path.write_bytes(excel.encode("utf-8"))
    assert cli_main(["roster", "check", str(path)]) == 0
    assert "ok, 2 badges" in capsys.readouterr().out
    st, body = admin_post(central, "/roster", excel.encode("utf-8"))
    assert (st, body) == (200, {"scope": "*", "imported": 2, "stored": 2})
    want = [{"badge": "04A1B2C3", "employee_id": "E1", "name": "Ada Lovelace"},
            {"badge": "123:45678", "employee_id": "E2", "name": "Grace Hopper"}]
    assert central.store.roster("term-1")[1] == want
    # Merged into: a row per badge, the count is what the scope holds.
    st, body = admin_post(central, "/roster?merge=1", (HEAD + "04A1B2C3,E9,Ada L.\nABCD,E3,Alan\n").encode())
    assert (st, body) == (200, {"scope": "*", "imported": 2, "stored": 3})
    # A device's own rows over the global ones: the view a terminal pulls must pass the rules too.
    st, body = admin_post(central, "/roster?scope=term-1", (HEAD + "abcd,E4,Alan T.\n").encode())
    assert (st, body) == (200, {"scope": "term-1", "imported": 1, "stored": 1})
    assert [e["employee_id"] for e in central.store.roster("term-1")[1]] == ["E9", "E2", "E4"]
    st, body = admin_post(central, "/roster?scope=nobody", GOOD.encode())
    assert st == 404 and body["error"] == "unknown_device"


def test_device_views_over_the_limit_are_refused(central: Handle) -> None:
    # 9,999 global badges and 2 of a device's own: the device's view is 10,001, more than it holds.
    many = HEAD + "".join(f"{i:08X},E{i},N{i}\n" for i in range(9_999))
    assert admin_post(central, "/roster", many.encode())[0] == 200
    st, body = admin_post(central, "/roster?scope=term-2", (HEAD + "F0000001,X1,A\nF0000002,X2,B\n").encode())
    assert st == 400 and "device term-2's roster with this one: 10001 badges: more than 10000" in body["detail"], body
    assert central.store.roster_scope("term-2") == []
