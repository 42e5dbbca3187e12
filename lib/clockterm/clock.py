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
#   when confirm_samples consistent samples spanning at least stepout_s agree (ntpd's stepout,
#   chrony's maxchange): a spike, a popcorn sample or a server that jumps and comes back never steps.
#   While the clock is trusted (a sync within stale_after_s) a change beyond its bound by more than
#   panic_ms is refused instead; once trust runs out (stale) it is taken like any step, confirmed.
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

from clockterm import log

# Quality of a stamp, as in clockterm.punch (Q_UNSYNCED ...); 3, corrected, is on the wire only: a
# pre-sync stamp corrected within its boot.
_Q_UNSYNCED = const(0)
_Q_SYNCED = const(1)
_Q_STALE = const(2)
_UNKNOWN_MS = const(0x3FFFFFFF)  # uncertainty when nothing bounds it (~12 days; a small int everywhere)

_REANCHOR_MS = const(3600000)  # fold elapsed ticks into the anchor hourly (ticks wrap after ~6 days)
_DRIFT_MIN_SPAN_MS = const(120000)  # shortest baseline for a drift estimate (1 ms / 120 s ~ 8 ppm)
_DRIFT_MAX_SPAN_MS = const(172800000)  # move the drift baseline forward after 2 days (temperature)
_DRIFT_MAX_PPB = const(500000)  # |drift| above 500 ppm is not a crystal: refuse, keep the old estimate
_DRIFT_UNC_PPB = const(50000)  # rate uncertainty with no measured drift (50 ppm, a poor crystal)
_DRIFT_UNC_MEAS_PPB = const(2000)  # rate uncertainty once drift is measured (2 ppm, temperature)
_RTC_UNC_PPB = const(200000)  # rate uncertainty of an RTC across a power cut (200 ppm, generous)
_ALERT_HOLD_MS = const(86400000)  # a latched alert stays a day after it was last raised
_TICK_US = const(1000)  # two samples stamped on ms ticks may differ by a tick

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


def _round_ms(us):
    return (us + 500) // 1000 if us >= 0 else -((-us + 500) // 1000)


class Clock:
    """UTC ms for stamps. now() -> (utc_ms, quality, uncertainty_ms); correct() from SNTP samples.

    Tunables (attributes): step_ms (offsets above this step, below it slew), slew_ppm (slew rate,
    parts per million of elapsed time), max_offset_ms ("rtc" alert threshold at the first sync),
    stale_after_s ("stale" quality and alert; also how long a sync keeps the clock trusted),
    panic_ms (a change this far beyond the clock's own bound is refused while it is trusted),
    stepout_s and confirm_samples (a step after the first sync waits for that many consistent
    samples over that long). The SNTP supervisor sets the ones its config names."""

    step_ms = 128  # ms: like ntpd's step threshold
    slew_ppm = 5000  # ppm: 5 ms per second, invisible to people, fast enough to converge in seconds
    max_offset_ms = 1000  # ms: a first sync that moves the boot time more raises the "rtc" alert
    stale_after_s = 86400  # s: no sync for longer is "stale" (quality and alert)
    panic_ms = 1000  # ms: beyond the clock's own bound by more is refused while trusted (ntpd: panic)
    stepout_s = 300  # s: a step waits this long for confirmation (ntpd's stepout)
    confirm_samples = 3  # consistent samples (rounds) a step needs, the first included

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
        self.holds = 0  # samples held (a step waiting for confirmation)
        self.refusals = 0  # samples refused (panic)
        self.syncs = 0
        self._alerts = {}  # name -> see _A_*
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

    def _mono(self):
        # Monotonic ms since boot (the anchor is refreshed hourly, so the ticks never wrap between).
        return self._m0 + time.ticks_diff(self.ticks_ms(), self._t0)

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
            age = m - self._last[_L_MONO]
            unc_us = self._last[_L_ERR] + abs(self._slew_us) + 1000 + age * self.rate_ppb() // 1000000
            return ms, _Q_STALE if age > self.stale_after_s * 1000 else _Q_SYNCED, (unc_us + 999) // 1000
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
        return ms, _Q_UNSYNCED, unc

    def rate_ppb(self):
        """How far the compensated tick rate may be off (ppb): what time measured on ticks may lose."""
        return _DRIFT_UNC_MEAS_PPB if self.drift_measured else _DRIFT_UNC_PPB

    def elapsed_us(self, t_from, t_to):
        """True us between two ticks_ms readings (drift compensated; they must be < 2^29 ms apart)."""
        e = time.ticks_diff(t_to, t_from)
        return e * 1000 + e * self._ppb // 1000000

    def _trusted_us(self):
        # The clock's own error bound (us) while it has a time it trusts: a sync less than
        # stale_after_s ago, or before the first sync a battery RTC set from such a sync. Else None.
        ms, q, unc = self.now()
        if q == _Q_SYNCED:
            return unc * 1000
        st = self.stored
        if q == _Q_UNSYNCED and unc < _UNKNOWN_MS and ms - int(st.get("sync_ms", st["utc_ms"])) \
                <= self.stale_after_s * 1000:
            return unc * 1000
        return None

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
        off_us = utc_us - self._us_at(ticks)
        first = self.last_sync_ms is None
        how = self._verdict(off_us, err_us, first, server)
        if how == _HOLD or how == _REFUSE:
            return None
        self._reanchor(ticks)
        mono = self._m0
        if how == _STEP:
            self._step(utc_us, off_us, first, server)
        else:
            self._slew_us = off_us
        self._drift(mono, utc_us)
        self._last = (mono, utc_us, err_us, delay_us, server, stratum)
        self.offset_ms = off_us / 1000
        self.last_sync_ms = utc_us // 1000
        self.syncs += 1
        try:
            self.rtc.set_ms(self.now()[0])
        except OSError as e:
            log.warn("clock", "cannot save %s: %s" % ("rtc", e))
        self.save()
        return self.offset_ms

    def _verdict(self, off_us, err_us, first, server):
        # Slew, step, hold or refuse a sample whose offset is off_us (see the step discipline above).
        if abs(off_us) <= self.step_ms * 1000:
            self.pending = None  # a held step that did not last: it was a spike
            return _STEP if first else _SLEW
        own = self._trusted_us()
        if own is not None and abs(off_us) > own + err_us + self.panic_ms * 1000:
            self.refusals += 1
            self.alert("panic")
            log.warn("clock", "%s: %+d ms, beyond the clock's own bound (%d ms) while it is trusted: refused"
                     % (server, _round_ms(off_us), own // 1000))
            return _REFUSE
        if first:
            return _STEP
        m = self._mono()
        pd = self.pending
        if pd is None or abs(off_us - pd[_PD_OFF]) > pd[_PD_ERR] + err_us + 2 * _TICK_US \
                + (m - pd[_PD_MONO]) * self.rate_ppb() // 1000000:
            self.pending = [m, off_us, err_us, 1]  # a new step to confirm, or one that changed its mind
            self.alert("jump")
            log.warn("clock", "%s: %+d ms: step held until confirmed over %d s"
                     % (server, _round_ms(off_us), self.stepout_s))
        else:
            pd[_PD_N] += 1
            if pd[_PD_N] >= self.confirm_samples and m - pd[_PD_MONO] >= self.stepout_s * 1000:
                return _STEP
        self.holds += 1
        return _HOLD

    def _step(self, utc_us, off_us, first, server):
        # Step to utc_us (the anchor was just moved to its ticks); record and say it.
        self._u0 = utc_us
        self._slew_us = 0
        if off_us < 0:
            self._last_ms = 0  # a backward step: monotonic output restarts here
        self.steps += 1
        self._base = None  # a rate is not measured across a step: the drift baseline starts here
        size = _round_ms(off_us)
        self.last_step = (utc_us // 1000, size, server)
        if first:
            self.stored = None  # only the unsynced uncertainty and save() needed it: free it
            self.presync_delta_ms = size
            log.info("clock", "first sync (%s): stepped %d ms (pre-sync stamps get this added)" % (server, size))
            if abs(off_us) > self.max_offset_ms * 1000:
                self.alert("rtc")  # the boot time (RTC or stored guess) was this far off
            if self.on_first_sync:
                # Synchronously, before anyone can read the synced clock: the uplink must not
                # send pre-sync punches before their correction is on flash.
                self.on_first_sync(self.presync_delta_ms)
        else:
            pd = self.pending
            log.warn("clock", "stepped %+d ms (%s; confirmed by %d samples over %d s)"
                     % (size, server, pd[_PD_N], (self._mono() - pd[_PD_MONO]) // 1000))
            self.alert("step")
        self.pending = None

    def _drift(self, mono, utc_us):
        # The rate of true UTC against monotonic ticks, over a baseline of at least
        # _DRIFT_MIN_SPAN_MS (independent of our own corrections).
        ref = self._base
        if ref is None:
            self._base = (mono, utc_us)
            return
        span = mono - ref[0]
        if span >= _DRIFT_MIN_SPAN_MS:
            ppb = (utc_us - ref[1] - span * 1000) * 1000000 // span
            if abs(ppb) <= _DRIFT_MAX_PPB:
                self._ppb = ppb
                self.drift_measured = True
            else:
                log.warn("clock", "drift %d ppm is implausible: ignored" % (ppb // 1000))
                self._base = (mono, utc_us)
        if span > _DRIFT_MAX_SPAN_MS and self._last is not None:
            self._base = self._last  # move the baseline forward (temperature changes the rate)

    # --- alerts ---------------------------------------------------------------------------------

    def alert(self, name):
        """Raise (or raise again) the latched alert `name`; it keeps the time it was first raised."""
        a = self._alerts.get(name)
        if a is None:
            self._alerts[name] = [self.now()[0], self._mono()]
        else:
            a[_A_MONO] = self._mono()

    def end_alert(self, name):
        """A condition that has ended (the supervisor's "servers")."""
        self._alerts.pop(name, None)

    def clear_alerts(self):
        """Someone has seen the alerts: drop the latched ones (conditions still true come back)."""
        self._alerts = {}

    def alerts(self):
        """{name: UTC ms since when}: the latched alerts and the "stale" condition."""
        m = self._mono()
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
            out["stale"] = self.now()[0] - over
        return out

    # --- persistence and status -----------------------------------------------------------------

    def save(self):
        """Write the current time, drift and uncertainty to path (atomically)."""
        ms, q, unc = self.now()
        d = {"utc_ms": ms, "drift_ppb": self._ppb, "unc_ms": unc if q != _Q_UNSYNCED else _UNKNOWN_MS}
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
            synced=q == _Q_SYNCED,
            quality="synced" if q == _Q_SYNCED else "stale" if q == _Q_STALE else "unsynced",
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
            pending_ms=pd and _round_ms(pd[_PD_OFF]),
            holds=self.holds,
            refusals=self.refusals,
            presync_delta_ms=self.presync_delta_ms,
            alerts=self.alerts(),
        )
