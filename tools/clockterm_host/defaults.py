"""The default terminal config that `clockterm config --board B` prints and `clockterm sim` runs."""

from __future__ import annotations

import secrets


def default_config(board: str = "sim", device_id: str = "term-001") -> dict:
    """A complete config that the device's validator accepts; scripts change the plain fields."""
    cfg: dict = {
        "version": 1,
        "board": board,
        "device_id": device_id,
        "tz": "CET-1CEST,M3.5.0,M10.5.0/3",
        "sntp": {
            "servers": ["127.0.0.1"] if board == "sim" else ["pool.ntp.org"],
            "port": 12300 if board == "sim" else 123,
            "interval_s": 1024,
            "samples": 4,
            "timeout_ms": 1000,
            "max_offset_ms": 1000,
            "stale_after_s": 86400,
            # Polling policy: a burst of `samples` requests burst_gap_ms apart at start and after a long
            # outage, then one request per poll (public pools ask for that); `owned` lists the servers
            # (as written in `servers`) that are yours and may get a burst at every poll. No server is
            # polled more often than min_poll_s, whatever the interval.
            "min_poll_s": 16,
            "burst_gap_ms": 2000,
            "owned": [],
            # (optional, not shown: panic_ms 1000 and stepout_s 300, the step discipline; docs/integrator.md)
        },
        "central": {
            "url": "https://127.0.0.1:8443" if board == "sim" else "https://central.example.com",
            "client_id": device_id,
            "client_secret": "",
            "ca": "ca.pem",
            "batch_max": 100,
            "interval_s": 5,
        },
        "endpoint": {
            "port": 8080,
            "tokens": [{"token": secrets.token_hex(16), "scopes": ["read", "admin"]}],
        },
        "terminal": {"duplicate_window_s": 10, "unknown_badge": "record", "kind_mode": "toggle",
                     "shift_max_h": 16},
        "journal": {"full_policy": "refuse"},
        "network": {"wifi_ssid": "", "wifi_password": "", "static_ip": None, "gateway": None, "dns": None},
    }
    if board == "sim":
        # Sim only: the tap control port and the virtual RTC (offset and drift from true time).
        cfg["sim"] = {"control_port": 7001, "rtc_offset_ms": 0, "rtc_drift_ppm": 0.0, "rtc_battery": True}
    return cfg
