"""The default terminal config that `clockterm config --board B` prints and `clockterm sim` runs.

The sim defaults line up with the other commands' defaults, so that a config printed in a folder runs
there without edits next to them: `clockterm central serve` (port 8443, state folder ./central, device
term-001, its CA and secrets kept there) and `clockterm timeserver` (SNTP on 127.0.0.1:12300)."""

from __future__ import annotations

import json
from pathlib import Path

DEVICE_ID = "term-001"  # also the device `clockterm central serve` registers when given none
CENTRAL_STATE = "central"  # `clockterm central serve`'s state folder when given none
CENTRAL_PORT = 8443
SIM_SNTP_PORT = 12300  # `clockterm timeserver`'s port (an unprivileged one)


def default_config(board: str = "sim", device_id: str = DEVICE_ID) -> dict:
    """A complete config that the device's validator accepts; scripts change the plain fields."""
    sim = board == "sim"
    cfg: dict = {
        "version": 1,
        "board": board,
        "device_id": device_id,
        "tz": "CET-1CEST,M3.5.0,M10.5.0/3",
        "sntp": {
            "servers": ["127.0.0.1"] if sim else ["pool.ntp.org"],
            "port": SIM_SNTP_PORT if sim else 123,
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
            "url": f"https://localhost:{CENTRAL_PORT}" if sim else "https://central.example.com",
            "client_id": device_id,
            "client_secret": "",
            # Beside the config: on a board the file provisioned with it; on the host the CA that
            # `clockterm central serve` made in its state folder
            "ca": f"{CENTRAL_STATE}/ca.pem" if sim else "ca.pem",
            "batch_max": 100,
            "interval_s": 5,
        },
        # The device endpoint (docs/integrator.md): off (port 0) until a port, a way to serve it (TLS
        # certificate and key, or allow_plain_http on a network that is yours) and tokens are provisioned:
        # `clockterm provision --token NAME:SCOPE --endpoint-cert ... --endpoint-key ...`; `clockterm sim`
        # turns it on for its terminals (plain HTTP on 127.0.0.1) with a token it prints.
        "endpoint": {
            "port": 0,
            "tokens": [],
            "allow_plain_http": False,
            "health_public": False,
        },
        "terminal": {"duplicate_window_s": 10, "unknown_badge": "record", "kind_mode": "toggle",
                     "shift_max_h": 16},
        "journal": {"full_policy": "refuse"},
        "network": {"wifi_ssid": "", "wifi_password": "", "static_ip": None, "gateway": None, "dns": None},
    }
    if sim:
        # Sim only: the tap control port and the virtual RTC (offset and drift from true time).
        cfg["sim"] = {"control_port": 7001, "rtc_offset_ms": 0, "rtc_drift_ppm": 0.0, "rtc_battery": True}
    return cfg


def fill_central(cfg: dict, state: Path) -> str:
    """Put this device's secret at the central whose state folder is `state` (`clockterm central serve
    --state`) into cfg, and on the sim board that central's CA (an absolute path). Returns a note for
    people: what was taken from where, or why the secret stays empty."""
    dev = cfg["device_id"]
    try:
        known = json.loads((state / "devices.json").read_text())
    except (OSError, ValueError):
        return (f"central: no central state in {state}/: central.client_secret left empty (start `clockterm "
                f"central serve` there first, or fill it in)")
    secret = known.get(dev) if isinstance(known, dict) else None
    if not isinstance(secret, str) or not secret:
        return (f"central: the central in {state}/ knows no device {dev}: central.client_secret left empty "
                f"(clockterm central serve --state {state} --devices {dev})")
    cfg["central"]["client_secret"] = secret
    if cfg["board"] == "sim":
        cfg["central"]["ca"] = str((state / "ca.pem").resolve())
    return f"central: the secret of {dev} and the CA from {state}/"
