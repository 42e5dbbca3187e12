"""Constants copied between firmware modules agree: a MicroPython const() does not cross modules.

A private `_NAME = const(value)` is folded into its own module's bytecode and costs no heap, so a
module that needs another's constant keeps a copy under the same name (journal.py's record types
from punch.py, the block-device ioctls, tz.py's rule kinds from tzparse.py, the roster's record
layout). This test reads every firmware module and checks that each name defined in several of
them has one value: a copy that drifts from its definition fails here, not on a device.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"

# Names that several modules use for different things: not copies of one another.
HOMONYMS = {
    "_CHUNK",  # https.py: bytes read at a time; boards/norflash.py: bytes of an image file handled at a time
    "_HDR",  # journal.py: segment header bytes; roster_file.py: its trailer's size
    "_IDLE",  # uplink.py: a state name; drivers/mfrc522.py: a command code
    "_MAGIC",  # journal.py: segment header magic; roster_file.py: trailer magic
    "_VERSION",  # sntp.py: NTP version; drivers/mfrc522.py: its version register
}


SAFE = (ast.Expression, ast.Constant, ast.BinOp, ast.UnaryOp, ast.Tuple, ast.Name, ast.Load, ast.operator,
        ast.unaryop)


def _value(expr: ast.expr, known: dict[str, object]) -> object:
    # A const()'s argument: a literal, or arithmetic on literals and the module's earlier constants.
    tree = ast.Expression(expr)
    bad = [type(n).__name__ for n in ast.walk(tree) if not isinstance(n, SAFE)]
    assert not bad, f"const({ast.unparse(expr)}): {bad}"
    return eval(compile(tree, "<const>", "eval"), {"__builtins__": {}}, dict(known))


def private_consts(src: str) -> dict[str, object]:
    """`_NAME = const(...)` assignments at module level: name -> value."""
    found: dict[str, object] = {}
    for node in ast.parse(src).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id.startswith("_") and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name) and node.value.func.id == "const"):
            found[node.targets[0].id] = _value(node.value.args[0], found)
    return found


def copies(modules: dict[str, str]) -> dict[str, dict[str, object]]:
    """name -> {module: value} for the names defined in more than one module."""
    by_name: dict[str, dict[str, object]] = defaultdict(dict)
    for module, src in modules.items():
        for name, value in private_consts(src).items():
            by_name[name][module] = value
    return {name: where for name, where in by_name.items() if len(where) > 1}


def firmware() -> dict[str, str]:
    return {str(p.relative_to(LIB)): p.read_text() for p in sorted(LIB.rglob("*.py"))}


def test_copied_constants_agree() -> None:
    disagree = {name: where for name, where in copies(firmware()).items()
                if name not in HOMONYMS and len(set(map(repr, where.values()))) > 1}
    assert not disagree, f"copies of a constant with different values: {disagree}"


def test_the_copies_this_test_guards_are_there() -> None:
    # The copies named in the modules' comments are seen as copies (a rename would hide one).
    found = copies(firmware())
    for name, modules in {
        "_T_PUNCH": {"clockterm/punch.py", "clockterm/journal.py"},
        "_MAX_RECORD": {"clockterm/punch.py", "clockterm/journal.py"},
        "_SEQ_AT": {"clockterm/punch.py", "clockterm/journal.py"},
        "_TAG_AT": {"clockterm/punch.py", "clockterm/journal.py"},
        "_BASE_SEQ": {"clockterm/punch.py", "clockterm/journal.py"},
        "_BASE_MS": {"clockterm/punch.py", "clockterm/journal.py"},
        "_BASE_OFF": {"clockterm/punch.py", "clockterm/journal.py"},
        "_IOCTL_BLOCK_ERASE": {"clockterm/journal.py", "clockterm/ring_lfs.py", "clockterm/boards/norflash.py"},
        "_IOCTL_SYNC": {"clockterm/journal.py", "clockterm/ring_lfs.py", "clockterm/boards/norflash.py"},
        "_MWD": {"clockterm/tz.py", "clockterm/tzparse.py"},
    }.items():
        assert modules <= set(found.get(name, ())), (name, found.get(name))


def test_a_drifted_copy_is_found() -> None:
    mods = {"a.py": "from micropython import const\n_T = const(1)\n_X = const(b'CJ')\n",
            "b.py": "from micropython import const\n_T = const(2)\n_X = const(b'CJ')\n_Y = const(3)\n"}
    assert copies(mods) == {"_T": {"a.py": 1, "b.py": 2}, "_X": {"a.py": b"CJ", "b.py": b"CJ"}}
