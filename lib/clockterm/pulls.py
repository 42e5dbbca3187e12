# The uplink's pulls from the central (docs/uplink.md): the roster and the device's config overlay, each a
# conditional GET with its ETag kept on flash; and what it does with a punch the central refuses (keeps
# it aside: _aside) and with the punches kept aside (offers them again: _replay; docs/uplink.md,
# "Refused punches"). Uplink.pulls and Uplink.send_once import this module when it is needed and forget
# it after, so its code takes heap only while it runs; the functions take the Uplink as `self` (methods
# kept apart), whose attributes hold the state they report (counters, errors, config_pending, refused).

import os
import time
from micropython import const

from clockterm import forget, https, log
from clockterm.uplink import _row

# (_ASIDE and _REJECTED are the uplink's, the endpoint names the folder too: constants are not names
# at run time)
_ASIDE = const("/refused/")  # in fs_root: a file per punch the central refused, "<journal id>.<seq>": its row
_ASIDE_MAX = const(32)  # punches kept aside at most; past that a refused punch holds its batch back (paused)
_REJECTED = const("rejected")

_ROSTER_TIMEOUT_MS = const(120000)  # a whole roster download (10,000 badges is some 300 KB)
_ROSTER_LINE = const(160)  # bytes of one roster line
_CONFIG_MAX_BYTES = const(2048)  # largest config overlay taken (it holds a few policy fields)


async def _get(self, name, accept, sink=None, timeout_ms=0, max_body=0):
    # Conditional GET of /v1/devices/<id>/<name> with the ETag kept in <fs_root>/<name>.etag:
    # (status, headers, body). A 401 drops the token (the next pull gets a new one).
    if not await self.ensure_token():
        raise https.HTTPError("no token")
    hdrs = "Authorization: Bearer %s\r\nAccept: %s\r\n" % (self.token, accept)
    try:
        with open("%s/%s.etag" % (self.fs_root, name), "rb") as f:
            etag = f.read(200).strip()
        # As the answer's header gave it (visible ASCII): a damaged file is no ETag, the whole
        # answer comes again (and its ETag replaces the file)
        if etag and min(etag) > 32 and max(etag) < 127:
            hdrs += "If-None-Match: %s\r\n" % etag.decode()
    except OSError:
        pass
    ans = await self.client.request("GET", "/v1/devices/%s/%s" % (self.device_id, name), headers=hdrs,
                                  sink=sink, timeout_ms=timeout_ms, max_body=max_body)
    if ans[0] == 401:
        self.token = None
    return ans


async def pull_roster(self):
    """Conditional GET of the roster; a 200 is streamed row by row into roster.new, checked and
    swapped in (RosterWriter), then reopened for lookups; the ETag goes to flash after the swap, so
    a reboot asks with it and a cut before leaves the old ETag (the roster is fetched again).
    Returns True when a new roster was applied."""
    from clockterm.roster import RosterWriter

    # The answer's lines (badge TAB employee TAB name LF) are assembled from the body's pieces in
    # one line buffer and each handed to a RosterWriter, created at the first piece (so a 304 or an
    # error answer never touches flash). Rows must arrive badge-sorted.
    line = bytearray(_ROSTER_LINE)
    w = None
    n = 0  # bytes of the current line in `line`

    def feed(data):
        nonlocal w, n
        if w is None:
            w = RosterWriter(self.roster.path)
        start = 0
        while True:
            i = data.find(b"\n", start)
            stop = len(data) if i < 0 else i
            k = stop - start
            if n + k > _ROSTER_LINE:
                raise ValueError("roster line too long")
            line[n:n + k] = data[start:stop]
            n += k
            if i < 0:
                return
            k, n = n, 0  # a whole line
            if k and line[k - 1] == 13:
                k -= 1
            if k:
                parts = bytes(memoryview(line)[:k]).decode().split("\t")
                if len(parts) < 2:
                    raise ValueError("roster line without employee id")
                w.add(parts[0], parts[1], parts[2] if len(parts) > 2 else "")
            start = i + 1

    if self.roster.error:
        # The file in force failed its check (or is of an older format): ask for the whole roster,
        # not whether it changed (an empty ETag is not sent).
        with open("%s/%s.etag" % (self.fs_root, "roster"), "w"):
            pass
    try:
        # The long timeout is the roster request's own (a token request before it has the usual one).
        status, hdrs, _ = await _get(self, "roster", "text/tab-separated-values", feed, _ROSTER_TIMEOUT_MS)
        if status == 401:
            return False
        if status == 304:
            self.roster_error = None
            return False
        if status != 200:
            raise https.HTTPError("HTTP %d" % status)
        feed(b"\n")  # the last line when it had no LF; an empty answer is an empty roster
        w.commit()  # checked on flash, renamed over roster.bin
        badges = w.count
        w = None
    finally:
        if w is not None:
            w.abort()  # roster.new goes, the old roster stays
    self.roster.open()  # same loop turn as the rename: no lookup sees a closed roster
    new = hdrs.get("etag")
    if new:
        with open("%s/%s.etag" % (self.fs_root, "roster"), "w") as f:
            f.write(new)
    self.roster_pulls += 1
    self.roster_error = None
    log.info("uplink", "roster applied: %d badges" % badges)
    return True


async def pull_config(self):
    """Conditional GET of the device's config overlay. A 200 is checked over the local config and
    written to config.central.json through a temp file and a rename, only when it changed
    (clockterm.config.save_overlay: the config module is imported for this and forgotten after, so
    that its code costs heap only during a pull); its ETag follows in config.etag after the swap.
    The next boot applies it. Returns True when an overlay was accepted; raises (old overlay kept)
    when it is refused."""
    status, hdrs, body = await _get(self, "config", "application/json", None, 0, _CONFIG_MAX_BYTES)
    if status == 401:
        return False
    if status == 304:
        self.config_checks += 1
        self.config_error = None
        return False
    if status != 200:
        raise https.HTTPError("HTTP %d" % status)
    self.config_checks += 1
    new = hdrs.get("etag")
    hdrs = None
    import sys

    keep = "clockterm.config" in sys.modules  # someone else holds it: leave it loaded
    from clockterm import config  # its code only while a new overlay is checked and saved

    try:
        # refused: raises
        old, crc = config.save_overlay(body, self.fs_root + "/config.central.json", self.config_path,
                                       self.good_config_path)
    finally:
        body = config = None
        if not keep:
            forget("clockterm.config")
    if self._cfg_crc == -1:
        self._cfg_crc = old  # only the uplink writes the file: the first pull sees the boot's overlay
    if crc != old:
        self.config_writes += 1
    self.config_pending = crc != self._cfg_crc
    if new:  # after the swap: a cut before it leaves the old ETag, and the overlay is fetched again
        with open("%s/%s.etag" % (self.fs_root, "config"), "w") as f:
            f.write(new)
    self.config_pulls += 1
    self.config_error = None
    log.info("uplink", "config overlay accepted; applies at the next boot: %s" % self.config_pending)
    return True


def _aside(self, from_seq, through_seq, jid, msg):
    # The central refused the batch from_seq..through_seq (HTTP 400, saying msg): the ms to wait
    # before the next attempt, as send_once returns it. One punch the central refuses must not hold
    # the others back: the batch is halved until it is alone (the punches before it leave
    # meanwhile), then kept aside, a file of its own in the folder fs_root + _ASIDE, named
    # "<journal id>.<seq>", holding its row (a file already there, from a power cut before the ack,
    # is written again), and acked in the journal; offered again at once (a 400 that does not last)
    # and then with the pulls. When it cannot be kept (no fs_root, _ASIDE_MAX kept, a flash error),
    # its batch pauses for rejected_pause_ms (the punches kept aside are offered again first).
    # (Uplink.send_once imports this module for it: it forgets the module when done)
    try:
        if through_seq > from_seq:
            self.limit = (through_seq - from_seq + 1) // 2
            self._error("HTTP 400 for seq %d..%d: halved to %d: %s" % (from_seq, through_seq, self.limit, msg))
            return -1
        try:
            if self.fs_root is None or self.refused >= _ASIDE_MAX:
                raise OSError(28)  # ENOSPC: no room kept for it
            path = self.fs_root + _ASIDE
            try:
                os.mkdir(path[:-1])
            except OSError:  # there already
                pass
            row = None
            for p in self.journal.pending(from_seq - 1, 1):
                if p.seq == from_seq:
                    row = _row(p)
            if row is None:  # gone from the journal meanwhile (an overwrite ring): nothing to keep, no ack
                raise OSError(2)
            with open(path + jid + "." + str(from_seq), "w") as f:
                f.write(row)
            self.refused = len(os.listdir(path))
        except OSError as e:
            self.state = _REJECTED
            self._error("HTTP 400 for seq %d: refused, paused (not kept aside: %s): %s" % (from_seq, e, msg))
            return self.rejected_pause_ms
        self.journal.ack(from_seq)  # kept aside: the rest goes on
        self.rejected_seq = None  # (health names the punches kept aside)
        self._next_at = time.ticks_ms()  # offered again as soon as nothing else waits
        self._error("HTTP 400 for seq %d: refused, kept aside: %s" % (from_seq, msg))
        return -1
    finally:
        forget("clockterm.pulls")


async def _replay(self):
    # The punches kept aside (the folder fs_root + _ASIDE) offered again, one by one (one refused again
    # is passed over), until the link fails; self.refused counted again after.
    path = self.fs_root + _ASIDE
    for name in os.listdir(path):
        try:
            jid, _, seq = name.partition(".")
            self._batch = int(seq), int(seq), jid
            with open(path + name, "rb") as f:
                body = f.read() if jid + "." + str(self._batch[0]) == name else b""
            if not body:  # cut short by a power cut (never acked: not lost), or not ours
                os.remove(path + name)
                continue
        except (ValueError, OSError):  # not a punch's file: left for people to see
            continue
        if await self.send_once(body) > 0:
            break
    self.refused = len(os.listdir(path))
