"""Values from a server or a config that end up in tick arithmetic, under an ESP32's ticks: the uplink's
token lifetime (a token that lives a week, or a lifetime that is garbage, must neither stop the uploads
nor be taken on trust), Retry-After, backoffs, and the SNTP and uplink intervals at the config's limits.

On an ESP32 ticks wrap at 2**30 ms and ticks_add refuses a step of 2**29 ms (6.2 days) or more: the
host's 64-bit ticks hide both, so these tests put tests/esp32time_mp.py's ESP32Time in place of the
modules' time (and check each wait that asyncio.sleep_ms would add to the ticks).
"""

from __future__ import annotations

import json
from pathlib import Path

import mp
from canned import answering
from clockterm_host.central import Handle


def esp32(case: str, **settings: object) -> str:
    """tests/esp32_ticks_mp.py's `case` with `settings`, after tests/esp32time_mp.py (its ESP32Time)."""
    return mp.script("esp32time_mp.py") + mp.script("esp32_ticks_mp.py", {"CASE": case, **settings}, "main()")


def token_answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


DAY_MS = 86_400_000
CASES = [  # (the answer's JSON after the access token, the token's lifetime in ms here, or the error)
    (b',"expires_in":604800', DAY_MS - 30_000),  # a week: used for a day
    (b',"expires_in":1e999', DAY_MS - 30_000),  # inf
    (b',"expires_in":100000000000000000000000000000', DAY_MS - 30_000),
    (b',"expires_in":3600', 3_570_000),  # refreshed 30 s before it expires
    (b',"expires_in":3600.5', 3_570_500),
    (b',"expires_in":"3600"', 3_570_000),
    (b'', 3_570_000),  # none: an hour
    (b',"expires_in":null', 3_570_000),
    (b',"expires_in":45', 22_500),  # short: used for half its life
    (b',"expires_in":-5', "token: bad expires_in -5"),
    (b',"expires_in":0', "token: bad expires_in 0"),
    (b',"expires_in":-1e999', "token: bad expires_in -inf"),
    (b',"expires_in":true', "token: bad expires_in True"),
    (b',"expires_in":"soon"', "token: bad expires_in 'soon'"),
    (b',"expires_in":"-5"', "token: bad expires_in '-5'"),
    (b',"expires_in":[3600]', "token: bad expires_in [3600]"),
]


def test_token_lifetimes_under_esp32_ticks() -> None:
    answers = [token_answer(b'{"access_token":"t%d"%s}' % (i, extra)) for i, (extra, _) in enumerate(CASES)]
    bad_tokens = [b'{"access_token":"a\\r\\nX-Injected: 1"}', b'{"access_token":""}', b'{"access_token":7}',
                  b'{"access_token":"%s"}' % (b"x" * 3000), b'{"access_token":"caf\xc3\xa9"}', b'[1]']
    answers += [token_answer(b) for b in bad_tokens]
    answers += [token_answer(b'{"access_token":"week","expires_in":604800}'),
                token_answer(b'{"access_token":"next","expires_in":604800}')]
    with answering(answers) as port:
        r = mp.run_mp(esp32("tokens", PORT=port, ANSWERS=len(answers)))
    out = [json.loads(ln[2:]) for ln in r.stdout.splitlines() if ln.startswith("R ")]
    for i, ((extra, want), got) in enumerate(zip(CASES, out, strict=False)):
        if isinstance(want, int):
            assert got == [True, f"t{i}", want], (extra, got)
        else:
            assert got == [False, None, want], (extra, got)
    for body, got in zip(bad_tokens, out[len(CASES):], strict=False):
        assert got == [False, None, "token: malformed answer"], (body, got)
    # The week's token: kept at 12 and 23 hours (no request), past 24 hours the next one is fetched
    assert out[-2] == [True, "week", DAY_MS - 30_000], out[-2]
    n = len(answers) - 1
    assert out[-1] == [[12, True, "week", n], [23, True, "week", n], [24, True, "next", n + 1]], out[-1]


def test_week_long_tokens_upload_on_an_esp32(central: Handle, tmp_path: Path) -> None:
    # The central issues 7-day tokens; the uplink runs with an ESP32's ticks, three days after boot:
    # every punch is uploaded (an expiry added to the ticks as it came made every try raise
    # OverflowError after the token was kept and before its expiry was, for ever, while punches piled up).
    from test_uplink import DRIVER, config

    central.set_faults(token_ttl_s=7 * 86400)
    # (inline, not a case of tests/esp32_ticks_mp.py: that module's code would take some 8 KB of the heap
    # the uplink driver has)
    patch = mp.script("esp32time_mp.py", tail="from clockterm import uplink as _up\n"
                                                "_up.time = ESP32Time(esp32_offset(3 * 86400000))")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(config(central, initial=40, taps=10, tap_every_ms=20, batch_max=20)))
    out = mp.mp_json(patch + DRIVER, args=[str(cfg)])
    assert out["acked"] == out["last"] == 50 and out["bad_acks"] == 0, out
    assert out["last_error"] is None and central.admin("/stats")["tokens_issued"] == 1, out


def test_every_wait_from_a_server_or_the_config_fits_esp32_ticks(tmp_path: Path) -> None:
    # Retry-After of 10**20 seconds (and one that is a date: a backoff), 100 backoffs in a row, and the
    # SNTP and uplink intervals at the config's largest values: each wait is one a board can add to
    # its ticks (under 2**29 ms), within its documented cap.
    answers = [b"HTTP/1.1 429 Too Many\r\nretry-after: 100000000000000000000\r\ncontent-length: 0\r\n\r\n",
               b"HTTP/1.1 429 Too Many\r\nretry-after: Wed, 21 Oct 2099 07:28:00 GMT\r\ncontent-length: 0\r\n\r\n"]
    with answering(answers) as port:
        out = mp.mp_json(esp32("steps", PORT=port, CLOCK_PATH=str(tmp_path / "clock.json")))
    assert out["retry_after"][0] == 900_000, out  # capped at 15 minutes
    assert 500 <= out["retry_after"][1] <= 1000, out  # a date is not a number of seconds: the first backoff
    assert out["backoff_max"] <= 300_000 and out["uplink_interval"] >= 3_600_000, out
    assert out["sntp_max"] >= 3_600_000 and out["window"] and out["burst_gap"], out


def test_the_heap_probe_is_reused_for_a_second_only_across_the_wrap() -> None:
    """STATUS and the metrics give the largest free block; its probe (a dozen allocations) answers
    again within 1 s, and is made anew after that, also when the ticks wrapped or are far apart."""
    first, cached, after_wrap, much_later = mp.mp_json(esp32("probe"))
    assert cached == first  # reused
    assert after_wrap < first  # probed again: the held block shows
    assert much_later > after_wrap  # probed again once it was freed


def test_a_held_back_address_is_let_go_across_the_wrap_and_after_days() -> None:
    """The endpoint holds an address back for 30 s after five failed attempts in a row; on an ESP32's
    ticks it is let go after the wrap, and one back after days (ticks that far apart read as a
    negative age) is not held back for days more."""
    seen = mp.mp_json(esp32("held"))
    assert seen[:6] == [0, 0, 0, 0, 0, None], seen  # 0: a wrong token; None: held back (429)
    assert seen[6] == 0 and seen[7] == 0, seen


def test_a_card_read_days_ago_is_not_held_back_on_esp32_ticks() -> None:
    """A reader holds back the card it last read for hold_ms (a card left in the field); the same card
    presented again days later is a new tap: on an ESP32's ticks an age of 6.2-12.4 days reads as
    negative, and one just past a whole period (12.4 days) as a few ms, unless the reader's polls that
    read nothing have let the window go."""
    seen = mp.mp_json(esp32("hold"))
    c = "04A1B2C3"
    # later: 0.3 s (held), 1 s, 7 days, 10 days, a whole period + 0.1 s, a whole period + 2 days
    assert seen[:6] == [[False, c, None], [False, c, c], [False, c, c], [False, c, c],
                        [False, c, None], [False, c, c]], seen[:6]  # a whole period on: the ticks cannot tell
    assert seen[6:] == [[True, c, None], [True, c, c], [True, c, c], [True, c, c], [True, c, c], [True, c, c]], seen[6:]


def test_a_silent_time_server_does_not_vote_again_after_the_wrap() -> None:
    """A time server's last answer votes for four poll intervals; a round after that forgets it, so that
    12.4 days on, when an ESP32's ticks have wrapped and its age reads as a minute, it does not vote
    again (a dead server outvoting a live one: a false falseticker, a step offered by stale answers)."""
    fresh, rounds, later = mp.mp_json(esp32("sntp"))
    assert fresh == [True, True, True]
    assert rounds is None  # no server due: only the answers' time was looked at
    assert later == [False, False, False]


def test_uptime_runs_on_past_the_wrap() -> None:
    """STATUS uptime_s and the metrics' up_seconds come from Clock.mono_ms: two weeks on an ESP32's
    ticks (a wrap at 12.4 days, differences right only within 6.2) count up by the hour throughout."""
    seen = mp.mp_json(mp.script("esp32time_mp.py") + mp.script("clock_mp.py", {"CASE": "mono_esp32"}, "main()"))
    assert seen[0] == 3600000 and all(b - a == 3600000 for a, b in zip(seen, seen[1:], strict=False)), seen[:3]


def _board_ticks_add(ticks: int, delta: object) -> int | str:
    """extmod/modtime.c's ticks_add with a 2**30 period, as an ESP32 has it: the unsigned check refuses
    delta <= -2**29 or >= 2**29; a float is a TypeError."""
    if not isinstance(delta, int):
        return "TypeError"
    if not -(1 << 31) <= delta < 1 << 31:
        return "OverflowError"  # mp_obj_get_int: not a 32-bit machine word
    period = 1 << 30
    if (delta + period // 2 - 1) % (1 << 32) >= period - 1:
        return "OverflowError"
    return (ticks + delta) & (period - 1)


def _board_ticks_diff(a: int, b: int) -> int:
    period = 1 << 30
    return ((a - b + period // 2) & (period - 1)) - period // 2


def test_the_fake_esp32_ticks_match_the_firmware_arithmetic() -> None:
    """Every test above trusts tests/esp32time_mp.py's ESP32Time: its ticks_add and ticks_diff are checked
    here against the firmware's own arithmetic (extmod/modtime.c), across the wrap and at the edges of
    the steps ticks_add refuses."""
    top, half = (1 << 30) - 1, 1 << 29
    cases = [["add", t, d] for t in (0, 5, top - 4, top, half) for d in (0, 1, 10, -1, -10, half - 1, half,
                                                                      -half + 1, -half, 1 << 30, 86_400_000 * 7,
                                                                      1 << 32, -(1 << 33))]
    cases += [["add", 5, 1.5]]
    cases += [["diff", a, b] for a in (0, 5, top, half, half - 1) for b in (0, 5, top - 4, top, half, half + 1)]
    got = mp.mp_json(mp.script("esp32time_mp.py") + mp.script("esp32time_check_mp.py", {"CASES": cases}, "main()"))
    want = [_board_ticks_add(a, b) if op == "add" else _board_ticks_diff(a, b) for op, a, b in cases]
    assert got == want, [(c, g, w) for c, g, w in zip(cases, got, want, strict=True) if g != w]
