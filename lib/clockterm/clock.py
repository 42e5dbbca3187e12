# Clock discipline: UTC milliseconds from the RTC anchored to ticks, corrected by SNTP, with quality.
#
# The RTC is read once at boot; from then on time is anchor + elapsed ticks (ticks_ms is cheap and
# monotonic, the RTC is slow to read and only has whole seconds on some boards). A sync (correct())
# re-anchors: a step, or a small offset slewed at a bounded rate so that stamps never run backwards
# within a boot. The rate error of the tick source (drift) is measured from successive syncs against
# true UTC (independent of our own corrections) and compensated between them. The last good time and
# the drift are kept in a small JSON file written atomically (temp + rename), so a reboot without
# network starts from a best guess, flagged.
#
# Step discipline: stamps reach payroll, so a server that lies or jumps must not push them around.
# - The first sync of a boot steps at once (the boot time is a guess), unless the clock has a time
#   it trusts (a battery RTC set from a sync less than stale_after_s ago) and the change lies beyond
#   the clock's own error bound by more than panic_ms: then it is refused ("panic" alert).
# - After it, an offset up to step_ms is slewed. A larger one is held ("jump" alert) and stepped only
#   when _CONFIRM_SAMPLES consistent samples spanning at least stepout_s agree (ntpd's stepout,
#   chrony's maxchange): a spike, a popcorn sample or a server that jumps and comes back never steps.
#   While the clock is trusted (a sync within stale_after_s) a change beyond its bound by more than
#   panic_ms is refused instead; once trust runs out (stale) it is taken like any step, confirmed.
#   While a refusal stands, the reported uncertainty covers the refused time too (the clock or its
#   servers are wrong, and the stamps cannot say which).
# - Every step is counted and the last one kept (when, size, servers) and logged.
# - Alerts are latched with the time they were first raised: they stay in alerts() until
#   clear_alerts() (someone has seen them) or a day after they were last raised, so that whoever looks
#   (STATUS, the log, metrics) sees them; conditions ("stale", the supervisor's "servers") end when
#   they end.
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
_F32_US = const(8388608)  # 2**23: us below this a 32-bit float holds as ms with 3 decimals
_DRIFT_MIN_SPAN_MS = const(120000)  # shortest baseline for a drift estimate (1 ms / 120 s ~ 8 ppm)
_DRIFT_MAX_SPAN_MS = const(172800000)  # move the drift baseline forward after 2 days (temperature)
_DRIFT_MAX_PPB = const(500000)  # |drift| above 500 ppm is not a crystal: refuse, keep the old estimate
_DRIFT_UNC_PPB = const(50000)  # rate uncertainty with no measured drift (50 ppm, a poor crystal)
_DRIFT_UNC_MEAS_PPB = const(2000)  # rate uncertainty once drift is measured (2 ppm, temperature)
_RTC_UNC_PPB = const(200000)  # rate uncertainty of an RTC across a power cut (200 ppm, generous)
_STORE_BYTES = const(256)  # the stored time's file: about 90 bytes of JSON
_STORE_MAX = const(1 << 48)  # its numbers: ms up to the year 10889
_ALERT_HOLD_MS = const(86400000)  # a latched alert stays a day after it was last raised
_TICK_US = const(1000)  # two samples stamped on ms ticks may differ by a tick
_CONFIRM_SAMPLES = const(3)  # consistent samples (rounds) a step after the first sync needs, the first included

# The last sync (Clock._last), a tuple; (mono, utc_us) is also the next drift baseline:
_L_MONO = const(0)  # monotonic ms since boot at the sample
_L_UTC = const(1)  # true UTC there, us
_L_ERR = const(2)  # its error bound, us
_L_DELAY = const(3)  # its round-trip delay, us
_L_SERVER = const(4)  # the server(s) it came from
_L_STRATUM = const(5)

# A step held for confirmation (Clock.pending), a list:
_PD_MONO = const(0)  # monotonic ms of the first sample that asked for it
_PD_OFF = const(1)  # that sample's offset, us
_PD_ERR = const(2)  # its error bound, us
_PD_N = const(3)  # consistent samples seen so far

# The last step (Clock.last_step), a tuple:
_ST_UTC = const(0)  # UTC ms just after the step
_ST_MS = const(1)  # its size, ms (true - ours before it)
_ST_SERVERS = const(2)

# A latched alert (values of Clock._alerts), a list:
_A_SINCE = const(0)  # UTC ms when first raised (as the clock read then)
_A_MONO = const(1)  # monotonic ms when last raised

_SAYS = const("%s: %+d ms: %s")  # (servers, offset, alert): the log line of a held, refused or taken step

# What correct() does with a sample:
_SLEW = const(0)
_STEP = const(1)
_HOLD = const(2)
_REFUSE = const(3)


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
    parts per million of elapsed time), max_offset_ms ("rtc" alert threshold at the first sync),
    stale_after_s ("stale" quality and alert; also how long a sync keeps the clock trusted),
    panic_ms (a change this far beyond the clock's own bound is refused while it is trusted),
    stepout_s (a step after the first sync waits this long for _CONFIRM_SAMPLES consistent
    samples). The SNTP supervisor sets the ones its config names."""

    step_ms = 128  # ms: like ntpd's step threshold
    slew_ppm = 5000  # ppm: 5 ms per second, invisible to people, fast enough to converge in seconds
    max_offset_ms = 1000  # ms: a first sync that moves the boot time more raises the "rtc" alert
    stale_after_s = 86400  # s: no sync for longer is "stale" (quality and alert)
    panic_ms = 1000  # ms: beyond the clock's own bound by more is refused while trusted (ntpd: panic)
    stepout_s = 300  # s: a step waits this long for confirmation (ntpd's stepout)

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
        self._last = None  # the last sync (see _L_*), None before
        self.drift_measured = False
        self.steps = 0
        self.last_step = None  # see _ST_*
        self.pending = None  # a step held for confirmation (see _PD_*)
        self._doubt_ms = 0  # how far the last refused change (panic) was: added to the uncertainty
        self.syncs = 0
        self._alerts = {}  # name -> see _A_*
        # The stored best guess (and drift) from the last run, then where the boot time comes from.
        st = None
        try:
            # A damaged file is no stored time: only a few hundred bytes are read, whatever its size,
            # and each number must be an int in range (a string or 1e999 would fail in now(), at a tap)
            with open(path, "rb") as f:
                st = f.read(_STORE_BYTES + 1)
            if len(st) > _STORE_BYTES:
                raise ValueError("size")
            st = json.loads(st)
            int(st["utc_ms"])
            for k in st:  # save() writes numbers only
                v = st[k]
                if isinstance(v, bool) or not isinstance(v, int) or not abs(v) < _STORE_MAX:
                    raise ValueError(k)
            self._ppb = st.get("drift_ppb", 0)
            if abs(self._ppb) > _DRIFT_MAX_PPB:
                self._ppb = 0
        except OSError:
            st = None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.warn("clock", "%s refused: %r" % (path, e))
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
        q = punch.Q_UNSYNCED
        unc = _UNKNOWN_MS
        if self.last_sync_ms is not None:
            age = m - self._last[_L_MONO]
            rate = _DRIFT_UNC_MEAS_PPB if self.drift_measured else _DRIFT_UNC_PPB
            unc = (self._last[_L_ERR] + abs(self._slew_us) + 1000 + age * rate // 1000000 + 999) // 1000
            q = punch.Q_STALE if age > self.stale_after_s * 1000 else punch.Q_SYNCED
        else:
            # Before a sync: bounded only when a battery RTC carried a synced time (from the store);
            # not when the RTC lost power (source "store": how long we were off is unknown).
            st = self.stored
            if st is not None and self.source == "rtc" and getattr(self.rtc, "battery", False):
                since = self._u0 // 1000 + m - int(st.get("sync_ms", st["utc_ms"]))
                if since >= 0:
                    unc = int(st.get("unc_ms", 0)) + since * _RTC_UNC_PPB // 1000000000 + 1000
        # A refused change (panic) means the clock or its servers are wrong: until a sync is taken
        # again, the uncertainty covers both.
        unc += self._doubt_ms
        return ms, q, unc if unc < _UNKNOWN_MS else _UNKNOWN_MS

    def elapsed_us(self, ticks, now):
        """(true us from ticks_ms reading ticks to reading now, how far that may be off in us): the
        ticks with the drift compensated, and the rate uncertainty left (they must be < 2^29 ms apart)."""
        e = time.ticks_diff(now, ticks)
        rate = _DRIFT_UNC_MEAS_PPB if self.drift_measured else _DRIFT_UNC_PPB
        return e * 1000 + e * self._ppb // 1000000, abs(e) * rate // 1000000

    # --- correction -----------------------------------------------------------------------------

    def correct(self, ticks, utc_us, delay_us=0, err_us=0, server=None, stratum=None):
        """Offer a sync: true UTC utc_us (microseconds) held at ticks_ms reading ticks.

        delay_us is the round-trip delay of the sample, err_us its error bound (the true time lies
        within utc_us +- err_us), server who said so (for status and the log). Returns the offset
        applied in ms (true - ours), or None when the sample was held (a step waiting for
        confirmation: `pending`) or refused (panic); see the step discipline above."""
        now_t = self.ticks_ms()
        if time.ticks_diff(now_t, ticks) < 0:
            ticks = now_t  # a sample from the future is a caller bug; do not anchor there
        off = utc_us - self._us_at(ticks)
        how = self._verdict(off, err_us, server)
        if how == _HOLD or how == _REFUSE:
            return None
        self._reanchor(ticks)
        mono = self._m0
        self._doubt_ms = 0
        if how == _STEP:
            self._step(utc_us, off, server)
        else:
            self._slew_us = off
        # Drift: the rate of true UTC against monotonic ticks, over a baseline of at least
        # _DRIFT_MIN_SPAN_MS (independent of our own corrections; a step starts a new baseline).
        point = (mono, utc_us, err_us, delay_us, server, stratum)
        ref = self._base
        if ref is None:
            self._base = point
        else:
            span = mono - ref[_L_MONO]
            if span >= _DRIFT_MIN_SPAN_MS:
                ppb = (utc_us - ref[_L_UTC] - span * 1000) * 1000000 // span
                if abs(ppb) <= _DRIFT_MAX_PPB:
                    self._ppb = ppb
                    self.drift_measured = True
                else:
                    log.warn("clock", "drift %d ppm is implausible: ignored" % (ppb // 1000))
                    self._base = point
            if span > _DRIFT_MAX_SPAN_MS and self._last is not None:
                self._base = self._last  # move the baseline forward (temperature changes the rate)
        self._last = point
        # ms for people and integrators: with the us as decimals while a 32-bit float (an ESP32's) keeps
        # them, else whole ms (a first sync after a power cut: years, which that float rounds to a minute)
        self.offset_ms = off / 1000 if -_F32_US < off < _F32_US else off // 1000
        self.last_sync_ms = utc_us // 1000
        self.syncs += 1
        try:
            self.rtc.set_ms(self.now()[0])
        except OSError as e:
            log.warn("clock", "cannot save %s: %s" % ("rtc", e))
        self.save()
        return self.offset_ms

    def _verdict(self, off, err_us, server):
        # Slew, step, hold or refuse a sample whose offset is off (us; see the step discipline above).
        first = self.last_sync_ms is None
        if abs(off) <= self.step_ms * 1000:
            self.pending = None  # a held step that did not last: it was a spike
            return _STEP if first else _SLEW
        # The clock's own bound while it has a time it trusts: a sync less than stale_after_s ago,
        # or (before the first sync) a battery RTC set from such a sync.
        ms, q, unc = self.now()
        if unc < _UNKNOWN_MS:
            unc -= self._doubt_ms  # the clock's own bound, without the disagreement a refusal added
        st = self.stored
        if q == punch.Q_SYNCED or (q == punch.Q_UNSYNCED and unc < _UNKNOWN_MS
                                   and ms - int(st.get("sync_ms", st["utc_ms"])) <= self.stale_after_s * 1000):
            if abs(off) > (unc + self.panic_ms) * 1000 + err_us:
                self._doubt_ms = (abs(off) + err_us) // 1000 + 1
                self.alert("panic")
                log.warn("clock", _SAYS % (server, off // 1000, "panic"))
                return _REFUSE
        if first:
            return _STEP
        m = self.mono_ms()
        pd = self.pending
        if pd is None or abs(off - pd[_PD_OFF]) > pd[_PD_ERR] + err_us + 2 * _TICK_US \
                + (m - pd[_PD_MONO]) * (_DRIFT_UNC_MEAS_PPB if self.drift_measured else _DRIFT_UNC_PPB) // 1000000:
            self.pending = [m, off, err_us, 1]  # a new step to confirm, or one that changed its mind
            self.alert("jump")
            log.warn("clock", _SAYS % (server, off // 1000, "jump"))
        else:
            pd[_PD_N] += 1
            if pd[_PD_N] >= _CONFIRM_SAMPLES and m - pd[_PD_MONO] >= self.stepout_s * 1000:
                return _STEP
        return _HOLD

    def _step(self, utc_us, off, server):
        # Step to utc_us (the anchor was just moved to its ticks); record and say it.
        self._u0 = utc_us
        self._slew_us = 0
        if off < 0:
            self._last_ms = 0  # a backward step: monotonic output restarts here
        self.steps += 1
        self._base = None  # a rate is not measured across a step: the drift baseline starts here
        size = (off + 500) // 1000 if off >= 0 else -((-off + 500) // 1000)
        self.last_step = (utc_us // 1000, size, server)
        if self.last_sync_ms is None:
            self.stored = None  # only the unsynced uncertainty and save() needed it: free it
            self.presync_delta_ms = size
            log.info("clock", "first sync: %s: stepped %d ms" % (server, size))
            if abs(off) > self.max_offset_ms * 1000:
                self.alert("rtc")  # the boot time (RTC or stored guess) was this far off
            if self.on_first_sync:
                # Synchronously, before anyone can read the synced clock: the uplink must not
                # send pre-sync punches before their correction is on flash.
                self.on_first_sync(self.presync_delta_ms)
        else:
            log.warn("clock", _SAYS % (server, size, "step"))
            self.alert("step")
        self.pending = None

    def mono_ms(self):
        """Milliseconds since the clock was made (at boot), unwrapped: an ESP32's ticks wrap every
        12.4 days (2**30 ms) and differ rightly only within 6.2; now() moves the anchor on before that
        (the display and the taps call it often), so this stays right for as long as the board runs."""
        self.now()
        return self._m0 + time.ticks_diff(self.ticks_ms(), self._t0)

    # --- alerts ---------------------------------------------------------------------------------

    def alert(self, name):
        """Raise (or raise again) the latched alert `name`; it keeps the time it was first raised."""
        ms = self.now()[0]
        m = self.mono_ms()
        a = self._alerts.get(name)
        if a is None:
            self._alerts[name] = [ms, m]
        else:
            a[_A_MONO] = m

    def clear_alerts(self, name=None):
        """Drop the alert `name` (a condition that ended), or all of them: someone has seen them
        (conditions still true come back at their next check)."""
        if name is None:
            self._alerts = {}
        else:
            self._alerts.pop(name, None)

    def alerts(self):
        """{name: UTC ms since when}: the latched alerts and the "stale" condition."""
        ms = self.now()[0]
        m = self.mono_ms()
        out = {}
        for name in list(self._alerts):
            a = self._alerts[name]
            if m - a[_A_MONO] > _ALERT_HOLD_MS:
                del self._alerts[name]
            else:
                out[name] = a[_A_SINCE]
        last = self._last[_L_MONO] if self.last_sync_ms is not None else 0
        over = m - last - self.stale_after_s * 1000
        if over > 0:
            out["stale"] = ms - over
        return out

    # --- persistence and status -----------------------------------------------------------------

    def save(self):
        """Write the current time, drift and uncertainty to path (atomically)."""
        ms, q, unc = self.now()
        # (the stored bound is the clock's own: a disagreement must not carry over to the next boot,
        # where it would let the servers it was refused from pass)
        unc -= self._doubt_ms
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

    def status(self):
        ms, q, unc = self.now()
        last = self._last
        st = self.last_step
        pd = self.pending
        return dict(
            synced=q == punch.Q_SYNCED,
            quality=punch.QUALITY[q],
            utc_ms=ms,
            offset_ms=self.offset_ms,
            last_sync=self.last_sync_ms,
            server=last and last[_L_SERVER],
            stratum=last and last[_L_STRATUM],
            delay_ms=last and last[_L_DELAY] / 1000,
            drift_ppm=self._ppb / 1000,
            drift_measured=self.drift_measured,
            uncertainty_ms=None if unc >= _UNKNOWN_MS else unc,
            source=self.source,
            syncs=self.syncs,
            steps=self.steps,
            last_step=st and dict(utc_ms=st[_ST_UTC], offset_ms=st[_ST_MS], servers=st[_ST_SERVERS]),
            pending=pd and pd[_PD_OFF] // 1000,  # ms: a step held for confirmation
            presync_delta_ms=self.presync_delta_ms,
            alerts=self.alerts(),
        )
