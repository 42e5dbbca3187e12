# A heap cut into small pieces, for the MicroPython side of tests: fragment_heap(piece, probe).
#
# Runs under the unix port with the compiled bundle (linted with the firmware's rules, lib/ruff.toml).
# A test puts this file's text before its own module's (mp.script("fragment_mp.py") + mp.script(...)),
# which takes the function from globals() and calls it where it wants the heap cut. Not collected by
# pytest (no test_ prefix).

import gc


def fragment_heap(piece, probe):
    """Cut the free heap into pieces of about `piece` bytes (plenty free in total, nothing of `probe`
    bytes in one block). Returns (fragmented, pins, plugs): whether a `probe`-byte allocation now
    fails, and what keeps the heap cut, which the caller holds for as long as it is to stay cut. Pins
    as large as the holes, and plugs for what is left between them, so that first-fit cannot tuck a
    pin away nor a freed hole merge into more."""
    gc.collect()
    n = gc.mem_free() // (piece * 2 + 200)
    holes, pins = [None] * n, [None] * n
    try:
        for i in range(n):
            holes[i] = bytearray(piece)
            pins[i] = bytearray(piece)
    except MemoryError:
        pass
    plugs = []
    chunk = None
    try:
        while True:
            chunk = [None] * 16
            plugs.append(chunk)
            for i in range(16):
                chunk[i] = bytearray(16)
    except MemoryError:
        pass
    holes = chunk = None
    gc.collect()
    try:
        bytearray(probe)
        fragmented = False
    except MemoryError:
        fragmented = True
    return fragmented, pins, plugs
