# The hold window every reader shares: a card left in the field is reported once per presentation.

import time


def check(r, bid, now):
    """bid, or None when reader r saw the same id within r.hold_ms of its last sighting.

    r carries hold_ms, held (a counter) and the last sighting (_hold_id, _hold_t); a held card keeps
    extending its own window, so it is reported again only after it has left the field. A reader calls
    it with bid None when a poll read nothing: a window that has passed is then forgotten, so that it
    never seems open again when the ticks wrap (2**30 ms on an ESP32: the same card, last read 6.2 to
    12.4 days ago, would read as held).
    """
    if r._hold_id is not None and not 0 <= time.ticks_diff(now, r._hold_t) < r.hold_ms:
        r._hold_id = None
    if bid is None:
        return None
    if bid == r._hold_id:
        r._hold_t = now
        r.held += 1
        return None
    r._hold_id = bid
    r._hold_t = now
    return bid
