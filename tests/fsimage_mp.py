# MicroPython side of the tests that reach into a stopped sim terminal's flash: files of its LittleFS
# image (fs.bin in the state folder) read, written or removed through the device's own filesystem, as
# a technician at the REPL would.
#
# tests/test_broken_files.py, tests/test_e2e_config.py and tests/test_e2e_health.py run this under the
# unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml). They prepend
# the settings IMAGE (the image's path), BLOCKS (its count of 4 KB blocks) and OP with the settings of
# that operation as assignments, and append a call of main():
#   OP "put": PLAN, a list of [name, source]: the file written from the host file `source` in pieces
#     (a file may be larger than the interpreter's heap), or removed when source is None; prints "ok".
#   OP "read": NAME; WRITE, text written to the file first (None: nothing); REMOVE, whether to remove
#     it once read. Prints {"text": ..., "mtime": ...} or null when it does not exist, as JSON.
# Not collected by pytest (no test_ prefix).

import json
import os
import vfs

from clockterm.boards.norflash import NorFlash, mount_lfs

IMAGE = globals().get("IMAGE", "fs.bin")
BLOCKS = globals().get("BLOCKS", 64)
OP = globals().get("OP", "read")
PLAN = globals().get("PLAN", [])
NAME = globals().get("NAME", "config.json")
WRITE = globals().get("WRITE")
REMOVE = globals().get("REMOVE", False)


def put():
    mount_lfs(NorFlash(4096, BLOCKS, path=IMAGE), "/flash")
    buf = bytearray(4096)
    for name, src in PLAN:
        if src is None:
            try:
                os.remove("/flash/" + name)
            except OSError:
                pass
            continue
        with open(src, "rb") as f, open("/flash/" + name, "wb") as out:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                out.write(memoryview(buf)[:n])
    print("ok")


def read():
    flash = NorFlash(4096, BLOCKS, path=IMAGE)
    vfs.mount(vfs.VfsLfs2(flash), "/flash")
    p = "/flash/" + NAME
    if WRITE is not None:
        with open(p, "w") as f:
            f.write(WRITE)
    try:
        st = os.stat(p)
        with open(p) as f:
            doc = {"text": f.read(), "mtime": st[8]}
        if REMOVE:
            os.remove(p)
    except OSError:
        doc = None
    print(json.dumps(doc))
    vfs.umount("/flash")
    flash.close()


def main():
    {"put": put, "read": read}[OP]()
