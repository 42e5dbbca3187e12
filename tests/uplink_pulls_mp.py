# MicroPython side of test_uplink_roster's test_pulls_whose_code_cannot_load: an Uplink with a roster and
# a config to keep current runs its pulls while the import of their module (clockterm.pulls) fails, as
# it would with a heap too cut up for its code. Settings (prepended by the test): FS, a folder. Prints
# one JSON line. Not collected by pytest (no test_ prefix).

import asyncio
import builtins
import json

from clockterm import uplink
from clockterm.roster import Roster

FS = globals().get("FS", "/tmp")
_real_import = builtins.__import__


class Journal:
    last_seq = acked_seq = 0


class Client:
    """Never asked: the pulls' code does not load."""

    connections = requests = 0

    def close(self):
        pass


def _refusing_import(name, *args):
    if name == "clockterm.pulls" or (name == "clockterm" and len(args) > 2 and args[2] and "pulls" in args[2]):
        raise MemoryError("memory allocation failed")
    return _real_import(name, *args)


def main():
    up = uplink.Uplink(Journal(), None, "t-1", "https://unused", "t-1", "pw", client=Client(),
                       roster=Roster(FS + "/roster.bin"), fs_root=FS, config_path=FS + "/config.json")
    builtins.__import__ = _refusing_import
    try:
        asyncio.run(up.pulls())
    finally:
        builtins.__import__ = _real_import
    print(json.dumps({"failures": up.failures, "state": up.state, "roster_error": up.roster_error,
                      "config_error": up.config_error}))
