"""Config validation on the device (unix port): every bad field is named, the last good one stays."""

from __future__ import annotations

import copy
import json
import tempfile

from clockterm_host.cli import check_config
from clockterm_host.defaults import default_config
from mp import mp_json, run_mp, script


def _check_all(docs: list[str]) -> list[str]:
    """Run the device validator over many config texts in one micropython process (read from a file, one
    per line, and answered one per line: the 100 KB heap holds one at a time)."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as f:
        f.write("".join(json.dumps(d) + "\n" for d in docs))
        f.flush()
        out = run_mp(script("config_mp.py", {"CASE": "check", "DOCS_FILE": f.name}, "main()")).stdout
    return [json.loads(ln[2:]) for ln in out.splitlines() if ln.startswith("R ")]


def _mutate(path: str, value=None, delete=False) -> str:
    doc = copy.deepcopy(default_config("sim"))
    node = doc
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[p]
    if delete:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return json.dumps(doc)


CASES = [
    (_mutate("device_id", delete=True), "device_id: missing"),
    (_mutate("sntp", delete=True), "sntp.servers: missing"),
    (_mutate("sntp.port", "123"), "sntp.port: expected int, got string"),
    (_mutate("sntp.port", 70000), "sntp.port: 70000 is out of range 1..65535"),
    (_mutate("sntp.port", True), "sntp.port: expected int, got bool"),
    (_mutate("sntp.servers", []), "sntp.servers: needs 1..8 entries, has 0"),
    (_mutate("sntp.servers", ["ok", 5]), "sntp.servers[1]: expected a non-empty string, got int"),
    (_mutate("terminal.kind_mode", "sideways"), "terminal.kind_mode: 'sideways' is not one of"),
    (_mutate("central.url", "ftp://x.example"), "central.url: must start with https://"),
    (_mutate("central.url", "http://127.0.0.1:8443"), "central.url: must start with https://"),
    (_mutate("central.url", "https://"), "central.url: '' is not a usable address"),
    (_mutate("central.url", "https://central.example.com:99999/v1"), "central.url: 'central.example.com:99999' is not"),
    (_mutate("central.url", "https://central.example.com:"), "central.url: 'central.example.com:' is not"),
    (_mutate("central.url", "https://exa mple.com"), "central.url: 'exa mple.com' is not a usable address"),
    (_mutate("central.url", "https://-central.example.com"), "central.url: '-central.example.com' is not"),
    (_mutate("central.url", "https://10.0.0.256"), "central.url: '10.0.0.256' is not a usable address"),
    (_mutate("central.url", "https://[zz::1]:8443"), "central.url: '[zz::1]:8443' is not a usable address"),
    (_mutate("sntp.servers", ["pool.ntp.org:abc"]), "sntp.servers[0]: 'pool.ntp.org:abc' is not a usable address"),
    (_mutate("sntp.servers", ["ok.example", "1.2.3"]), "sntp.servers[1]: '1.2.3' is not a usable address"),
    (_mutate("sntp.servers", ["ntp.example:0"]), "sntp.servers[0]"),
    (_mutate("network.static_ip", "10.0.0.1/33"), "network.static_ip: '10.0.0.1/33' is not a usable address"),
    (_mutate("network.gateway", "10.0.0.x"), "network.gateway: '10.0.0.x' is not a usable address"),
    (_mutate("network.dns", "1.2.3.4.5"), "network.dns: '1.2.3.4.5' is not a usable address"),
    (_mutate("device_id", "term\r\nX-Injected: 1"), "device_id: control character in the text"),
    (_mutate("network.wifi_password", "pass\x00word"), "network.wifi_password: control character"),
    (_mutate("sntp.servers", ["pool.ntp.org\t"]), "sntp.servers[0]: control character"),
    (_mutate("endpoint.tokens", [{"token": "x" * 20 + "\n", "scopes": ["read"]}]), "endpoint.tokens[0].token: control"),
    (_mutate("sim", "fast"), "sim: expected object, got string"),
    (_mutate("network", [1]), "network: expected object, got list"),
    (_mutate("central", "https://x.example"), "central: expected object, got string"),
    (_mutate("sim.rtc_drift_ppm", "fast"), "sim.rtc_drift_ppm: expected number, got string"),
    (_mutate("endpoint.tokens", [{"token": "short", "scopes": ["read"]}]), "endpoint.tokens[0].token"),
    (_mutate("endpoint.tokens", [{"token": "x" * 20, "scopes": ["root"]}]), "endpoint.tokens[0].scopes"),
    (_mutate("version", 2), "version: 2 is out of range 1..1"),
    (_mutate("tz", "CET-1CEST,M13.5.0,M10.5.0/3"), "tz: TZ 'CET-1CEST,M13.5.0,M10.5.0/3'"),
    ('{"version": 1, "board": "sim",', "config: not valid JSON"),
    ("[1, 2]", "config: expected a JSON object, got list"),
    ("", "config: not valid JSON"),
]


def test_default_configs_are_valid():
    docs = [json.dumps(default_config(b)) for b in ("sim", "esp32-devkitc-rc522")]
    assert _check_all(docs) == ["ok", "ok"]


def test_bad_fields_are_named():
    got = _check_all([doc for doc, _ in CASES])
    for (_, want), msg in zip(CASES, got, strict=True):
        assert want in msg, (want, msg)


def test_addresses_that_can_be_used_pass():
    docs = [_mutate("central.url", url) for url in ("https://[::1]:8443/api", "https://central.example.com/v1/",
                                                     "https://10.1.2.3", "https://localhost:8443")]
    docs += [_mutate("network.static_ip", "192.168.1.20/24"), _mutate("network.static_ip", "192.168.1.20"),
             _mutate("sntp.servers", ["pool.ntp.org", "192.168.1.1:1123", "ntp-1.example.com"])]
    assert _check_all(docs) == ["ok"] * len(docs)


def test_optional_fields_may_be_absent_or_null():
    doc = default_config("sim")
    del doc["sim"]
    doc["network"]["static_ip"] = None
    assert _check_all([json.dumps(doc)]) == ["ok"]


def test_last_good_config_stays_in_force(tmp_path):
    good = json.dumps(default_config("sim", "term-good"))
    cfg, saved = tmp_path / "config.json", tmp_path / "config.good.json"
    out = mp_json(script("config_mp.py", {"CASE": "last_good", "CFG": str(cfg), "GOOD": str(saved), "TEXT": good},
                         "main()"))
    assert out[0] == ["term-good", None]
    assert out[1] == ["term-good", "device_id: expected string, got int"]
    assert "device_id: expected string, got int" in out[2]


def test_cli_check(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(_mutate("sntp.timeout_ms", 5))
    ok, msg = check_config(p)
    assert not ok and msg == "sntp.timeout_ms: 5 is out of range 50..10000"
    p.write_text(json.dumps(default_config("sim")))
    assert check_config(p) == (True, "ok")


def test_overlay_check_reads_the_local_config_as_it_parses(tmp_path):
    cfg = default_config("sim")
    cfg["endpoint"]["tokens"] = [{"token": f"{i:032x}", "scopes": ["read", "admin"]} for i in range(16)]
    local = tmp_path / "config.json"
    local.write_text(json.dumps(cfg, indent=2))  # as a technician leaves it: pretty-printed
    assert local.stat().st_size > 2048  # more text than the fragmented heap holds in one piece
    # A running terminal checks a pulled overlay against its local config; by then its heap may not hold
    # the config's text in one piece. The check must read the file as it parses it.
    settings = {"CASE": "overlay_in_cut_heap", "LOCAL": str(local), "OUT": str(tmp_path / "config.central.json")}
    out = mp_json(script("fragment_mp.py") + script("config_mp.py", settings, "main()"))
    assert out == {"fragmented": True, "result": "saved"}, out
    assert json.loads((tmp_path / "config.central.json").read_text()) == {"terminal": {"duplicate_window_s": 30}}
