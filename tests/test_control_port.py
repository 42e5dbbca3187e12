"""The sim board's control port (lib/clockterm/boards/sim.py) under micropython: a STATUS answer larger
than the answer buffer streams out whole, through a buffer that another user fills at every await."""

from __future__ import annotations

import json
from pathlib import Path

import mp

BUF = 512  # the answer buffer of these runs: a fraction of the documents below

# The server, its buffer's other user and the client: tests/control_port_mp.py.

def run(tmp_path: Path, docs: list, cmds: list[str]) -> dict:
    from clockterm_host.sim import free_port

    cfg = {"docs": docs, "cmds": cmds, "state": str(tmp_path / "state"), "port": free_port(), "buf": BUF}
    out = mp.mp_json(mp.script("control_port_mp.py", {"CFG": json.dumps(cfg)}, "main()"), timeout=60)
    assert isinstance(out, dict)
    return out


def test_status_larger_than_the_buffer_comes_back_whole(tmp_path: Path) -> None:
    big = {
        "version": 1,
        "errors": [f"{i / 7:9.3f} E tap: journal full: punch of {i:020d} refused" for i in range(6)],
        "counts": {f"k{i}": i * 1000003 for i in range(20)},
        "text": "x" * (BUF - 40),  # a member that fits only an emptied buffer
        "list": list(range(100)),
        "nested": {"a": [{"b": "é ü \" \\ \n"}] * 5, "c": None, "d": True},
    }
    # Documents whose last member ends just at the buffer's end: the closing "}\n" goes in a new piece.
    edge = [{"a": "x" * (BUF - 7 - n)} for n in (0, 1, 2)]
    out = run(tmp_path, [big, *edge, big], ["STATUS", "TAP 04A1B2C3", "STATUS", "STATUS", "STATUS", "STATUS"])
    lines = out["lines"]
    assert all(ln.endswith("}\n") and ln.count("\n") == 1 for ln in lines if ln.startswith("{")), lines
    assert len(lines[0]) > 3 * BUF
    assert json.loads(lines[0]) == big
    assert lines[1] == "OK 1 04A1B2C3\n"
    assert [json.loads(ln) for ln in lines[2:5]] == edge
    assert json.loads(lines[5]) == big
    assert out["clobbers"] > 6  # the buffer was overwritten while the answers were out


def test_member_over_the_whole_buffer_is_an_error_object(tmp_path: Path) -> None:
    doc = {"version": 1, "huge": ["y" * 100] * 20, "after": {"ok": True}}
    first = {"huge": "z" * BUF, "after": 2}  # the very first member, into an empty buffer
    out = run(tmp_path, [doc, first, None, {"after": 3}], ["STATUS", "STATUS", "STATUS", "STATUS"])
    lines = out["lines"]
    assert json.loads(lines[0]) == {"version": 1, "huge": {"error": f"over {BUF} bytes"}, "after": {"ok": True}}
    assert json.loads(lines[1]) == {"huge": {"error": f"over {BUF} bytes"}, "after": 2}
    # A failure before anything of the answer was sent is still an ERR line; the connection goes on.
    assert lines[2].startswith("ERR status: MemoryError"), lines[2]
    assert json.loads(lines[3]) == {"after": 3}
