# A fixed output buffer for JSON answers: allocated once, so a big answer needs no big block of heap.
#
# json.dump(obj, buf) writes token by token; a heap that is fragmented (as a long-running terminal's
# heap is) cannot always give json.dumps the contiguous block its growing string needs. An answer
# larger than the buffer goes out in pieces: its user notes `n` before a piece, and on Overflow sets
# `n` back to it (the piece's partial bytes dropped), hands what the buffer holds to its stream, and
# writes the piece again into the emptied buffer.

import io


class Overflow(Exception):
    pass


class OutBuf(io.IOBase):
    # io.IOBase gives this class the stream protocol that json.dump needs on MicroPython.
    def __init__(self, size):
        self.buf = bytearray(size)
        self.mv = memoryview(self.buf)
        self.n = 0

    def reset(self):
        self.n = 0
        return self

    def write(self, s):
        b = s.encode() if isinstance(s, str) else s
        end = self.n + len(b)
        if end > len(self.buf):
            raise Overflow("over %d bytes" % len(self.buf))
        self.mv[self.n:end] = b
        self.n = end
        return len(b)

    def view(self):
        return self.mv[:self.n]
