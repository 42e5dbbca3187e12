# Clock discipline: UTC milliseconds from the RTC anchored to ticks, corrected by SNTP, with quality.
#
# The RTC is read once at boot; from then on time is anchor + elapsed ticks (ticks_ms is cheap and
# monotonic, the RTC is slow to read and only has whole seconds on some boards). A sync (correct())
# re-anchors: the first of a boot, and any large offset, steps; a small offset is slewed at a bounded
# rate so that stamps never run backwards within a boot. The rate error of the tick source (drift)
# is measured from successive syncs against true UTC (independent of our own corrections) and
# compensated between them. The last good time and the drift are kept in a small JSON file written
# atomically (temp + rename), so a reboot without network starts from a best guess, flagged.
#
# Integers only for epoch quantities (floats are single precision on the ESP32); internal time is
# in microseconds.

import json
import os
import time
from micropython import const

from clockterm import log, punch  # punch: the quality codes of a stamp

_UNKNOWN_MS = const(0x3FFFFFFF)  # uncertainty when nothing bounds it (~12 days; a small int everywhere)

_REANCHOR_MS = const(3600000)  # fold elapsed ticks into the anchor hourly (ticks wrap after ~6 days)
_DRIFT_MIN_SPAN_MS = const(120000)  # shortest baseline for a drift estimate (1 ms / 120 s ~ 8 ppm)
_DRIFT_MAX_SPAN_MS = const(172800000)  # move the drift baseline forward after 2 days (temperature)
_DRIFT_MAX_PPB = const(500000)  # |drift| above 500 ppm is not a crystal: refuse, keep the old estimate
_DRIFT_UNC_PPB = const(50000)  # rate uncertainty with no measured drift (50 ppm, a poor crystal)
_DRIFT_UNC_MEAS_PPB = const(2000)  # rate uncertainty once drift is measured (2 ppm, temperature)
_RTC_UNC_PPB = const(200000)  # rate uncertainty of an RTC across a power cut (200 ppm, generous)


_Y2K_S = const(946684800)  # seconds from 1970-01-01 to 2000-01-01

# The epoch: the firmware speaks Unix-epoch UTC milliseconds everywhere; ports differ. Newer
# MicroPython ports count time.time() from 1970, older ones (and some builds) from 2000: time.gmtime(0)
# tells which, and the conversion is made here only. Seconds to add to a port-epoch time for Unix time:
PORT_TO_UNIX_S = 0 if time.gmtime(0)[0] == 1970 else _Y2K_S


def gmtime_ms(ms):
    """Broken-down UTC (year, month, mday, hour, minute, second, weekday, yearday) of Unix ms."""
    return time.gmtime(ms // 1000 - PORT_TO_UNIX_S)


def iso_ms(ms):
    """ISO 8601 UTC with milliseconds: 2026-11-25T14:13:20.123Z."""
    t = gmtime_ms(ms)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (t[0], t[1], t[2], t[3], t[4], t[5], ms % 1000)


class Clock:
    """UTC ms for stamps. now() -> (utc_ms, quality, uncertainty_ms); correct() from SNTP samples.

    Tunables (attributes): step_ms (offsets above this step, below it slew), slew_ppm (slew rate,
    parts per million of elapsed time), max_offset_ms and stale_after_s (alert thresholds; the SNTP
    supervisor sets them from its config)."""

    step_ms = 128  # ms: like ntpd's step threshold
    slew_ppm = 5000  # ppm: 5 ms per second, invisible to people, fast enough to converge in seconds
    max_offset_ms = 1000  # ms: an offset above this at a sync raises the "offset" alert
    stale_after_s = 86400  # s: no sync for longer is "stale" (quality and alert)

    def __init__(self, rtc, path, ticks_ms=None):
        self.rtc = rtc
        self.path = path  # the stored time (JSON)
        self.ticks_ms = ticks_ms or time.ticks_ms  # the tick source: injectable for tests that simulate days
        t = self.ticks_ms()
        self._t0 = t  # anchor ticks
        self._m0 = 0  # monotonic ms since boot at the anchor (ticks unwrapped)
        self._ppb = 0  # drift compensation, parts per billion (true elapsed = ticks * (1 + ppb/1e9))
        self._slew_us = 0  # slew still to apply (signed), from the anchor on
        self._last_ms = 0  # last stamp returned, for monotonic output
        self.presync_delta_ms = None
        self.on_first_sync = None  # called with presync_delta_ms at the first sync of this boot
        self.last_sync_ms = None  # UTC ms of the last sync this boot
        self.offset_ms = None  # offset measured at the last sync (true - ours)
        self._base = None  # (mono_ms, utc_us): baseline of the drift estimate
        # The last sync, None before: (mono_ms, utc_us, err_us, delay_us, server, stratum), see
        # correct(); (mono_ms, utc_us) is also the next drift baseline. (One tuple: an attribute
        # each would take more heap in the instance's dict.)
        self._last = None
        self.drift_measured = False
        self.steps = 0
        self.syncs = 0
        self.servers_failing = False  # set by the SNTP supervisor
        # The stored best guess (and drift) from the last run, then where the boot time comes from.
        st = None
        try:
            with open(path) as f:
                st = json.load(f)
            int(st["utc_ms"])
            self._ppb = int(st.get("drift_ppb", 0))
            if abs(self._ppb) > _DRIFT_MAX_PPB:
                self._ppb = 0
        except (OSError, ValueError, KeyError, TypeError):
            st = None
        self.stored = st
        try:
            rtc_ms = int(rtc.now_ms())
        except (OSError, ValueError):
            rtc_ms = 0
        if st is not None and rtc_ms < st["utc_ms"]:
            # The RTC is behind the last time we knew to be good: it lost power (or never had a
            # battery). The stored time is a lower bound and the best guess we have.
            self.source, start_ms = "store", st["utc_ms"]
        elif rtc_ms < 1704067200000:  # 2024-01-01: an RTC before this has certainly lost its time
            self.source, start_ms = "rtc-invalid", rtc_ms
        else:
            self.source, start_ms = "rtc", rtc_ms
        self._u0 = start_ms * 1000
        log.info("clock", "boot time from %s: %d" % (self.source, start_ms))

    # --- reading -------------------------------------------------------------------------------

    def _us_at(self, t):
        """Clock value in us at ticks t (no monotonic clamp)."""
        e = time.ticks_diff(t, self._t0)
        us = self._u0 + e * 1000 + e * self._ppb // 1000000
        s = self._slew_us
        if s:
            a = e * self.slew_ppm // 1000  # slewed so far
            if a < 0:
                a = 0
            us += s if a >= abs(s) else (a if s > 0 else -a)
        return us

    def _reanchor(self, t):
        # Fold everything up to ticks t into the anchor (applied slew included).
        us = self._us_at(t)
        e = time.ticks_diff(t, self._t0)
        s = self._slew_us
        if s:
            a = e * self.slew_ppm // 1000  # the part of the slew applied by t
            if a < 0:
                a = 0
            self._slew_us = 0 if a >= abs(s) else (s - a if s > 0 else s + a)
        self._m0 += e
        self._u0 = us
        self._t0 = t

    def now(self):
        """(utc_ms, quality, uncertainty_ms) for a stamp taken now."""
        t = self.ticks_ms()
        if time.ticks_diff(t, self._t0) > _REANCHOR_MS:
            self._reanchor(t)
        ms = self._us_at(t) // 1000
        if ms < self._last_ms:
            ms = self._last_ms  # a slew or rounding never makes stamps run backwards
        else:
            self._last_ms = ms
        m = self._m0 + time.ticks_diff(t, self._t0)  # monotonic ms since boot
        if self.last_sync_ms is not None:
            age = m - self._last[0]
            rate = _DRIFT_UNC_MEAS_PPB if self.drift_measured else _DRIFT_UNC_PPB
            unc_us = self._last[2] + abs(self._slew_us) + 1000 + age * rate // 1000000
            return ms, punch.Q_STALE if age > self.stale_after_s * 1000 else punch.Q_SYNCED, (unc_us + 999) // 1000
        # Before a sync: bounded only when a battery RTC carried a synced time (from the store);
        # not when the RTC lost power (source "store": how long we were off is unknown).
        st = self.stored
        unc = _UNKNOWN_MS
        if st is not None and self.source == "rtc" and getattr(self.rtc, "battery", False):
            since = self._u0 // 1000 + m - int(st.get("sync_ms", st["utc_ms"]))
            if since >= 0:
                unc = int(st.get("unc_ms", 0)) + since * _RTC_UNC_PPB // 1000000000 + 1000
                if unc > _UNKNOWN_MS:
                    unc = _UNKNOWN_MS
        return ms, punch.Q_UNSYNCED, unc

    # --- correction -----------------------------------------------------------------------------

    def correct(self, ticks, utc_us, delay_us=0, err_us=0, server=None, stratum=None):
        """Apply a sync: true UTC utc_us (microseconds) held at ticks_ms reading ticks.

        delay_us is the round-trip delay of the sample, err_us its error bound (delay/2 + the
        server's root distance). Returns the offset applied, in ms (true - ours)."""
        now_t = self.ticks_ms()
        if time.ticks_diff(now_t, ticks) < 0:
            ticks = now_t  # a sample from the future is a caller bug; do not anchor there
        self._reanchor(ticks)
        mono = self._m0
        off_us = utc_us - self._u0
        first = self.last_sync_ms is None
        if first or abs(off_us) > self.step_ms * 1000:
            self._u0 = utc_us
            self._slew_us = 0
            if off_us < 0:
                self._last_ms = 0  # a backward step: monotonic output restarts here
            self.steps += 1
            if first:
                self.stored = None  # only the unsynced uncertainty and save() needed it: free it
                self.presync_delta_ms = (off_us + 500) // 1000 if off_us >= 0 else -((-off_us + 500) // 1000)
                log.info("clock", "first sync: stepped %d ms (pre-sync stamps get this added)"
                         % self.presync_delta_ms)
                if self.on_first_sync:
                    # Synchronously, before anyone can read the synced clock: the uplink must not
                    # send pre-sync punches before their correction is on flash.
                    self.on_first_sync(self.presync_delta_ms)
            else:
                log.warn("clock", "stepped %d ms" % (off_us // 1000))
        else:
            self._slew_us = off_us
        # Drift: the rate of true UTC against monotonic ticks, over a baseline of at least
        # _DRIFT_MIN_SPAN_MS (independent of our own corrections).
        point = (mono, utc_us, err_us, delay_us, server, stratum)
        ref = self._base
        if ref is None:
            self._base = point
        else:
            span = mono - ref[0]
            if span >= _DRIFT_MIN_SPAN_MS:
                ppb = (utc_us - ref[1] - span * 1000) * 1000000 // span
                if abs(ppb) <= _DRIFT_MAX_PPB:
                    self._ppb = ppb
                    self.drift_measured = True
                else:
                    log.warn("clock", "drift %d ppm is implausible: ignored" % (ppb // 1000))
                    self._base = point
            if span > _DRIFT_MAX_SPAN_MS and self._last is not None:
                self._base = self._last  # move the baseline forward (temperature changes the rate)
        self._last = point
        self.offset_ms = off_us / 1000
        self.last_sync_ms = utc_us // 1000
        self.syncs += 1
        if abs(off_us) > self.max_offset_ms * 1000:
            log.warn("clock", "offset %d ms at sync with %s" % (off_us // 1000, server))
        try:
            self.rtc.set_ms(self.now()[0])
        except OSError as e:
            log.warn("clock", "cannot save %s: %s" % ("rtc", e))
        self.save()
        return self.offset_ms

    # --- persistence and status -----------------------------------------------------------------

    def save(self):
        """Write the current time, drift and uncertainty to path (atomically)."""
        ms, q, unc = self.now()
        d = {"utc_ms": ms, "drift_ppb": self._ppb, "unc_ms": unc if q != punch.Q_UNSYNCED else _UNKNOWN_MS}
        if self.last_sync_ms is not None:
            d["sync_ms"] = self.last_sync_ms
        elif self.stored is not None and "sync_ms" in self.stored:
            d["sync_ms"] = self.stored["sync_ms"]
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(d, f)
            os.rename(tmp, self.path)
        except OSError as e:
            log.warn("clock", "cannot save %s: %s" % (self.path, e))

    def alerts(self):
        out = []
        if self.offset_ms is not None and abs(self.offset_ms) > self.max_offset_ms:
            out.append("offset")
        m = self._m0 + time.ticks_diff(self.ticks_ms(), self._t0)  # monotonic ms since boot
        since = m - self._last[0] if self.last_sync_ms is not None else m
        if since > self.stale_after_s * 1000:
            out.append("stale")
        if self.servers_failing:
            out.append("servers")
        return out

    def status(self):
        ms, q, unc = self.now()
        last = self._last
        return dict(
            synced=q == punch.Q_SYNCED,
            quality=punch.QUALITY[q],
            utc_ms=ms,
            offset_ms=self.offset_ms,
            last_sync=self.last_sync_ms,
            server=last and last[4],
            stratum=last and last[5],
            delay_ms=last and last[3] / 1000,
            drift_ppm=self._ppb / 1000,
            drift_measured=self.drift_measured,
            uncertainty_ms=unc,
            source=self.source,
            syncs=self.syncs,
            steps=self.steps,
            presync_delta_ms=self.presync_delta_ms,
            alerts=self.alerts(),
        )
