# MicroPython side of the config tests (tests/test_config.py): clockterm.config's validation, the last
# good config kept in force, and an overlay checked in a heap cut into small pieces. Each case prints
# what it saw (check: a line "R <json>" per document; the others: one JSON document).
#
# Runs under the unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml).
# The test prepends its settings as assignments (mp.script): CASE, the case to run (a key of CASES at
# the end), and the case's own: DOCS_FILE (check: config texts, one per line), CFG, GOOD and TEXT
# (last_good: the config's path, the last good copy's, a good config's text), LOCAL and OUT
# (overlay_in_cut_heap: the local config, the overlay file to write); then it appends a call of main().
# overlay_in_cut_heap needs tests/fragment_mp.py's text in front of this file's (its fragment_heap).
# Not collected by pytest (no test_ prefix).

import gc
import json
import os

from clockterm import config

CASE = globals().get("CASE", "check")
DOCS_FILE = globals().get("DOCS_FILE", "")
CFG = globals().get("CFG", "")
GOOD = globals().get("GOOD", "")
TEXT = globals().get("TEXT", "")
LOCAL = globals().get("LOCAL", "")
OUT = globals().get("OUT", "")
fragment_heap = globals().get("fragment_heap")  # tests/fragment_mp.py's, when its text comes first


def check():
    # the device validator over many config texts (the 100 KB heap holds one at a time)
    for line in open(DOCS_FILE):
        try:
            config.parse(json.loads(line))
            print("R", json.dumps("ok"))
        except config.ConfigError as e:
            print("R", json.dumps(str(e)))


def last_good():
    out = []
    open(CFG, "w").write(TEXT)
    doc, err = config.load(CFG, GOOD)
    out.append([doc["device_id"], err])
    open(CFG, "w").write('{"version": 1, "board": "sim", "device_id": 5}')
    doc, err = config.load(CFG, GOOD)
    out.append([doc["device_id"], str(err)])
    os.remove(GOOD)
    try:
        config.load(CFG, GOOD)
        out.append("loaded")
    except config.ConfigError as e:
        out.append(str(e))
    print(json.dumps(out))


def overlay_in_cut_heap():
    # A running terminal checks a pulled overlay against its local config; by then its heap may not
    # hold the config's text in one piece. The check must read the file as it parses it.
    cut, pins, plugs = fragment_heap(900, 2048)
    try:
        _old, _crc = config.save_overlay(b'{"terminal": {"duplicate_window_s": 30}}', OUT, LOCAL)
        res = "saved"
    except MemoryError:
        res = "MemoryError"
    del pins, plugs  # the cut undone before the answer is printed
    gc.collect()
    print(json.dumps({"fragmented": cut, "result": res}))


CASES = {"check": check, "last_good": last_good, "overlay_in_cut_heap": overlay_in_cut_heap}


def main():
    CASES[CASE]()
