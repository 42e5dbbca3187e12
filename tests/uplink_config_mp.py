# MicroPython side of the config overlay tests (tests/test_uplink_config.py): clockterm.config's
# merge_overlay on the device, each overlay merged over the local config in one process; prints a JSON
# list of the merged documents or the error texts, and last whether the local config came out unchanged.
#
# Runs under the unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml).
# The test prepends its settings as assignments (mp.script): LOCAL, the local config, and OVERLAYS, a
# list of overlays, both as JSON text (parsed here as the device parses what it reads); then it appends a
# call of main(). Not collected by pytest (no test_ prefix).

import json

from clockterm import config

LOCAL = globals().get("LOCAL", "{}")
OVERLAYS = globals().get("OVERLAYS", "[]")


def main():
    local = json.loads(LOCAL)
    before = json.dumps(local)
    out = []
    for o in json.loads(OVERLAYS):
        try:
            out.append(config.merge_overlay(local, o))
        except config.ConfigError as e:
            out.append(str(e))
    out.append(json.dumps(local) == before)
    print(json.dumps(out))
