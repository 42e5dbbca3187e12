# Recovery at the REPL: leave safe mode, restore the last good config, export and reset the journal.
#
# Never imported by the running terminal: `clockterm recover` (tools/clockterm_host/recover.py) runs
# these functions at the board's REPL once the app is stopped, or a technician does by hand:
#
#     import clockterm.recover as r
#     r.status()              # crashes, safe-mode pin, config, journal
#     r.clear_crashes()       # then machine.reset(): the terminal starts again
#
# Each prints one line of JSON (what the host reads) and returns the same document. Writes go through a
# temporary file and a rename, as everywhere on the board.

import json
import os

from clockterm.punch import QUALITY

_CRASH_LIMIT = 3  # app.py: crashes in a row that put the terminal into safe mode
_SECTOR = 4096


def _board():
    from clockterm import app

    board = app.load_board()
    board.mount_fs()
    return board


def _say(doc):
    print(json.dumps(doc))
    return doc


def _crashes(board):
    # As app._crash_count reads it: a few bytes whatever the file's size, a damaged count is none.
    try:
        with open(board.fs_root + "/crashes", "rb") as f:
            n = int(f.read(8) or 0)
        return n if 0 <= n < 1000 else 0
    except (OSError, ValueError):
        return 0


def _config_error(path):
    # None when the config at path is valid, else why not.
    from clockterm import config

    try:
        config.parse(config.read(path))  # bounded: a damaged file is a reason, not a MemoryError
    except OSError as e:
        return "cannot read %s (%s)" % (path, e)
    except config.ConfigError as e:
        return str(e)
    return None


def _zone(board):
    # The time zone in force, for the offsets of corrected punches (Journal.tz): as the app takes it,
    # the config (else the last good one) with the central's overlay laid over it when that is valid;
    # None when no config is readable (the offsets then stay as stamped).
    from clockterm import config, tz

    for path in (board.config_path, board.good_config_path):
        try:
            cfg = config.parse(config.read(path))
        except Exception:  # noqa: BLE001 - any reason: the next, else none
            continue
        try:
            cfg = config.merge_overlay(cfg, config.loads(config.read(board.fs_root + "/config.central.json",
                                                                     "overlay"), "overlay"))
        except Exception:  # noqa: BLE001 - no overlay, or one refused: the local config alone
            pass
        try:
            return tz.TZ(cfg["tz"])
        except ValueError:
            return None
    return None


def _journal(board):
    # The journal over its partition, as the app opens it (policy does not matter for reading or a reset).
    from clockterm.journal import open_journal

    j = board.board_cfg["flash"]["journal"]
    floor = board.fs_root + "/journal.floor"
    if j["backend"] != "raw":
        jr = open_journal("littlefs", floor_path=floor, root=board.fs_root + "/journal",
                          capacity_bytes=j["size_kb"] * 1024)
    else:
        if board.name == "sim":
            from clockterm.boards.norflash import NorFlash

            path = board.state_dir + "/journal.bin"
            bdev = NorFlash(_SECTOR, os.stat(path)[6] // _SECTOR, path=path)
        else:
            import esp32

            found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label=j["partition"])
            if not found:
                raise OSError("no flash partition %r for the journal" % j["partition"])
            bdev = found[0]
        jr = open_journal("raw", floor_path=floor, bdev=bdev)
    jr.tz = _zone(board)
    return jr


def status():
    """Crash count, whether the terminal is in safe mode and why, the configs, the journal's counters."""
    board = _board()
    n = _crashes(board)
    held = board.safe_pin_held()
    cfg_err = _config_error(board.config_path)
    good = board.good_config_path
    doc = {"board": board.name, "crashes": n, "crash_limit": _CRASH_LIMIT, "safe_pin_held": held,
           "safe_mode": held or n >= _CRASH_LIMIT, "config_error": cfg_err,
           "good_config_error": _config_error(good) if good else "none kept on this board"}
    try:
        s = _journal(board).status()
        doc["journal"] = {k: s[k] for k in ("journal_id", "last_seq", "acked_seq", "pending", "fill_pct")}
    except (OSError, ValueError) as e:
        doc["journal"] = {"error": str(e)}
    return _say(doc)


def clear_crashes():
    """Set the crash count to 0: the next reset starts the app (unless the safe-mode pin is held)."""
    board = _board()
    n = _crashes(board)
    try:
        os.remove(board.fs_root + "/crashes")
    except OSError:
        pass
    return _say({"crashes_before": n, "crashes": _crashes(board), "safe_pin_held": board.safe_pin_held()})


def restore_config():
    """Put the last good config back in force; the refused one is kept as config.bad.json."""
    board = _board()
    good = board.good_config_path
    if not good:
        raise OSError("this board keeps no last good config")
    err = _config_error(good)
    if err:
        raise ValueError("the last good config is not usable: %s" % err)
    cur = board.config_path
    try:
        os.rename(cur, cur[:-5] + ".bad.json")
    except OSError:
        pass  # no config at all: nothing to keep
    tmp = cur + ".tmp"
    with open(good) as src, open(tmp, "w") as dst:
        dst.write(src.read())
    os.rename(tmp, cur)
    return _say({"restored": cur, "from": good, "config_error": _config_error(cur)})


def export_journal(after_seq=None):
    """One JSON line per punch after after_seq (default: the unsent ones), then a summary line."""
    j = _journal(_board())
    n = 0
    for p in j.pending(after_seq):
        print(json.dumps({"journal_id": p.journal_id, "seq": p.seq, "utc_ms": p.utc_ms, "badge": p.badge,
                          "kind": p.kind, "employee_id": p.employee, "utc_offset_min": p.utc_offset_min,
                          "quality": QUALITY[p.quality], "uncertainty_ms": p.uncertainty_ms}))
        n += 1
    return _say({"exported": n, "journal_id": j.journal_id, "last_seq": j.last_seq, "acked_seq": j.acked_seq})


def reset_journal(force=False, expect_pending=None):
    """Erase the journal and start a new one (new journal id; seqs continue above the old ones).

    Refused while it holds unsent punches unless force, and then only when expect_pending equals their
    number (the host exported exactly those before asking)."""
    j = _journal(_board())
    pending = j.last_seq - j.acked_seq
    if pending and not force:
        raise ValueError("journal holds %d unsent punches: export them, then reset with force" % pending)
    if pending and expect_pending != pending:
        raise ValueError("journal holds %d unsent punches, not the %s exported: export again" % (
            pending, expect_pending))
    old = j.journal_id
    j.format(j.last_seq)
    j.close()
    return _say({"old_journal_id": old, "journal_id": j.journal_id, "dropped": pending, "seq_floor": j.last_seq})
