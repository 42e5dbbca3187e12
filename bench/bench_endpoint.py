"""endpoint.*: the device endpoint on the unix port (a sim terminal in its ESP32-sized heap, plain HTTP):
how fast it answers, what it costs in heap, and what hammering it does to the tap path.

One run, two terminals one after the other (each with its own reference central; the clock left
unsynced, so the uplink waits and stays out of the figures), each figure beside its baseline:
1. baseline: a terminal with the endpoint off. Its live heap after boot (`baseline_heap_idle_bytes`),
   the largest live heap sampled while it takes TAPS taps (`baseline_heap_busy_max_bytes`), and the
   taps' control-port latency (`baseline_tap_latency_ms_p50/p99`).
2. the same terminal with the endpoint on: its live heap after boot, listening with no client
   (`heap_idle_bytes`; the endpoint's code is imported at a first connection and forgotten after the
   last), then with one kept-alive connection open (`heap_idle_connected_bytes`); `*_cost_bytes` are
   these less the baseline's.
3. requests per second for GET health, status and metrics on kept-alive connections, from one client
   and from CLIENTS clients at once (`<route>_rps_1`, `<route>_rps_4`), each for SECONDS, with the
   latency of each request (`<route>_latency_ms_p50/p99_<n>`) and the largest live heap sampled
   meanwhile (`<route>_heap_max_bytes_<n>`, beside `baseline_heap_busy_max_bytes`; the largest of the
   one-client runs less that: `heap_serving_one_cost_bytes`, what serving one client adds). Four clients
   are more than the default 3 connection slots: a newcomer evicts the connection idle longest
   (between two requests a kept-alive connection is idle), so some requests meet a closed
   connection and are sent again on a new one (`<route>_reconnects_4`); every answer must be a 200
   or the bench fails.
4. taps back to back, with the endpoint quiet (`tap_latency_ms_*`, the baseline of this terminal), then
   while CLIENTS clients hammer status, metrics and health in turn (`tap_hammered_latency_ms_*`); the
   live heap sampled meanwhile (`heap_serving_max_bytes`, `heap_serving_cost_bytes` against the
   baseline's busy heap, `heap_free_min_bytes` out of the board's heap, beside
   `baseline_heap_free_min_bytes`), the longest event-loop stall (`loop_stall_ms_max_hammered`;
   on a two-core host it also counts the host descheduling the interpreter, so it varies from run to
   run), and the requests answered meanwhile (`hammer_rps`).
Heap figures are STATUS's heap.alloc (gc.mem_alloc() right after gc.collect(): live data), sampled
over the control port, less the heap the unix port spends on holding the ROMFS image (a board maps it
from flash; bench_heap.image_alloc), as heap.peak_bytes is; the differences are the endpoint's own.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from clockterm_host import bundle  # noqa: E402
from endpoint_site import READ, Site, https_only, open_site  # noqa: E402
from rawhttp import Conn  # noqa: E402

from bench.bench_heap import image_alloc  # noqa: E402

ROUTES = ("health", "status", "metrics")
CLIENTS = 4
SECONDS = 2.0  # per route and client count
TAPS = 400  # taps back to back for a latency baseline
HAMMER_S = 4.0  # taps while the endpoint is hammered
CONNECTS = 20  # new connections, each with one GET, for the TLS handshake's cost


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")


def _lat(prefix: str, ms: list[float]) -> dict[str, float]:
    return {f"{prefix}_p50": round(statistics.median(ms), 3), f"{prefix}_p99": round(_pct(ms, 99), 3)}


class Client(threading.Thread):
    """GET requests on one kept-alive connection, one after the other, until stopped (paths in turn);
    a closed connection (evicted by a newcomer) is opened again and the request sent again."""

    def __init__(self, port: int, paths: tuple[str, ...], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.paths, self.stop = port, paths, stop
        self.ms: list[float] = []
        self.codes: dict[int, int] = {}
        self.reconnects = 0

    def run(self) -> None:
        c = None
        i = 0
        while not self.stop.is_set():
            try:
                if c is None:
                    c = Conn(self.port, timeout=10.0)
                t0 = time.perf_counter()
                a = c.request("GET", self.paths[i % len(self.paths)], READ)
                self.ms.append((time.perf_counter() - t0) * 1000)
                self.codes[a.status] = self.codes.get(a.status, 0) + 1
                i += 1
            except (OSError, EOFError):
                if c is not None:
                    c.close()
                c = None
                self.reconnects += 1
                time.sleep(0.001)
        if c is not None:
            c.close()


def _hammer(port: int, n: int, paths: tuple[str, ...], seconds: float,
            meanwhile: Callable[[], None] | None = None) -> tuple[list[Client], float]:
    """n clients for `seconds` (or while meanwhile() runs); the clients and the time they ran."""
    stop = threading.Event()
    clients = [Client(port, paths, stop) for _ in range(n)]
    t0 = time.monotonic()
    for c in clients:
        c.start()
    if meanwhile is None:
        time.sleep(seconds)
    else:
        meanwhile()
    stop.set()
    for c in clients:
        c.join(15)
    took = time.monotonic() - t0
    codes: dict[int, int] = {}
    for c in clients:
        for k, v in c.codes.items():
            codes[k] = codes.get(k, 0) + v
    if set(codes) != {200}:
        raise RuntimeError(f"answers by status: {codes}")
    return clients, took


def _taps(site: Site, prefix: str, count: int = 0, seconds: float = 0.0) -> list[float]:
    """Taps back to back (count of them, or for `seconds`), each answered OK; their round trips (ms)."""
    out = []
    t_end = time.monotonic() + seconds
    i = 0
    while (count and i < count) or (seconds and time.monotonic() < t_end):
        t0 = time.perf_counter()
        answer = site.term.tap(f"{prefix}{i:06X}")
        out.append((time.perf_counter() - t0) * 1000)
        if not answer.startswith("OK "):
            raise RuntimeError(f"tap {i} answered {answer!r}")
        i += 1
    return out


class Sampler(threading.Thread):
    """STATUS over the control port every `every_s`: live heap (alloc), free heap, loop stalls."""

    def __init__(self, site: Site, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.site, self.every_s = site, every_s
        self.stop = threading.Event()
        self.samples: list[dict] = []

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            try:
                self.samples.append(self.site.term.status())
            except (OSError, ValueError):
                pass

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(5)
        self.samples.append(self.site.term.status())


def _baseline(tmp: Path) -> dict[str, float]:
    with open_site(tmp / "baseline", None, endpoint={"port": 0}) as site:
        time.sleep(0.5)
        idle = site.term.status()["heap"]["alloc"]
        with Sampler(site) as s:
            taps = _taps(site, "B0", TAPS)
        return {"baseline_heap_idle_bytes": idle,
                "baseline_heap_busy_max_bytes": max(x["heap"]["alloc"] for x in s.samples),
                "baseline_heap_free_min_bytes": min(x["heap"]["free"] for x in s.samples),
                **_lat("baseline_tap_latency_ms", taps)}


def _endpoint(tmp: Path) -> dict[str, float]:
    f: dict[str, float] = {}
    with open_site(tmp / "endpoint", None) as site:
        port = site.api.port
        time.sleep(0.5)
        f["heap_idle_bytes"] = site.term.status()["heap"]["alloc"]
        with Conn(port) as c:
            if c.request("GET", "/health", READ).status != 200:
                raise RuntimeError("health not answered")
            time.sleep(0.2)
            f["heap_idle_connected_bytes"] = site.term.status()["heap"]["alloc"]
        for route in ROUTES:
            for n in (1, CLIENTS):
                with Sampler(site) as sampled:
                    clients, took = _hammer(port, n, (f"/{route}",), SECONDS)
                f[f"{route}_heap_max_bytes_{n}"] = max(x["heap"]["alloc"] for x in sampled.samples)
                ms = [x for c in clients for x in c.ms]
                f[f"{route}_rps_{n}"] = round(len(ms) / took, 1)
                f.update(_lat(f"{route}_latency_ms", ms))
                f[f"{route}_latency_ms_p50_{n}"] = f.pop(f"{route}_latency_ms_p50")
                f[f"{route}_latency_ms_p99_{n}"] = f.pop(f"{route}_latency_ms_p99")
                if n > 1:
                    f[f"{route}_reconnects_{n}"] = sum(c.reconnects for c in clients)
        f.update(_lat("tap_latency_ms", _taps(site, "C1", TAPS)))
        stall_before = site.term.status()["loop"]["stall_ms_max"]
        hammered: list[float] = []
        with Sampler(site) as s:
            clients, took = _hammer(port, CLIENTS, tuple(f"/{r}" for r in ("status", "metrics", "health")), 0,
                                    lambda: hammered.extend(_taps(site, "D2", seconds=HAMMER_S)))
        f.update(_lat("tap_hammered_latency_ms", hammered))
        f["taps_hammered"] = len(hammered)
        f["hammer_rps"] = round(sum(len(c.ms) for c in clients) / took, 1)
        f["heap_serving_max_bytes"] = max(x["heap"]["alloc"] for x in s.samples)
        f["heap_free_min_bytes"] = min(x["heap"]["free"] for x in s.samples)
        f["loop_stall_ms_max_hammered"] = s.samples[-1]["loop"]["stall_ms_max"]
        f["loop_stall_ms_max_before"] = stall_before
        log = site.term.console()
        if "MemoryError" in log or "Traceback" in log:
            raise RuntimeError(f"the terminal's log:\n{log[-2000:]}")
    return f


def _tls(tmp: Path) -> dict[str, float]:
    """The same terminal serving HTTPS only (a certificate from a CA of the bench's own): its live heap
    listening and with one kept-alive client, a new connection's handshake plus one GET health, and GET
    status on a kept-alive connection; beside the plain endpoint's figures (_endpoint)."""
    import http.client

    f: dict[str, float] = {}
    tls, ctx = https_only(tmp)
    with open_site(tmp / "tls", None, endpoint=tls) as site:
        port = site.api.port
        time.sleep(0.5)
        f["tls_heap_idle_bytes"] = site.term.status()["heap"]["alloc"]
        hdr = {"Authorization": f"Bearer {READ}"}

        def get(c: http.client.HTTPConnection, path: str) -> None:
            c.request("GET", "/api/v1" + path, headers=hdr)
            r = c.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"{path} over TLS answered {r.status}")

        def connect() -> http.client.HTTPSConnection:
            return http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)

        ms = []
        for _ in range(CONNECTS):
            t0 = time.perf_counter()
            c = connect()
            get(c, "/health")
            ms.append((time.perf_counter() - t0) * 1000)
            c.close()
        f.update(_lat("tls_connect_get_ms", ms))
        c = connect()
        get(c, "/status")
        time.sleep(0.2)
        f["tls_heap_idle_connected_bytes"] = site.term.status()["heap"]["alloc"]
        n, t0 = 0, time.monotonic()
        while time.monotonic() < t0 + SECONDS:
            get(c, "/status")
            n += 1
        f["tls_status_rps_1"] = round(n / (time.monotonic() - t0), 1)
        c.close()
    # the plain endpoint's new connection + GET health, for the same comparison
    with open_site(tmp / "plain", None) as site:
        ms = []
        for _ in range(CONNECTS):
            t0 = time.perf_counter()
            c = http.client.HTTPConnection("127.0.0.1", site.api.port, timeout=10)
            c.request("GET", "/api/v1/health", headers={"Authorization": f"Bearer {READ}"})
            c.getresponse().read()
            ms.append((time.perf_counter() - t0) * 1000)
            c.close()
        f.update(_lat("plain_connect_get_ms", ms))
    return f


def _table(f: dict[str, float]) -> None:
    rows = [("live heap after boot, bytes", f["heap_idle_bytes"], f["baseline_heap_idle_bytes"]),
            ("... one kept-alive connection open", f["heap_idle_connected_bytes"], f["baseline_heap_idle_bytes"]),
            ("... largest while serving / taking taps", f["heap_serving_max_bytes"],
             f["baseline_heap_busy_max_bytes"]),
            ("least free heap, bytes (serving / taps)", f["heap_free_min_bytes"], f["baseline_heap_free_min_bytes"]),
            ("tap latency p50, ms (hammered / quiet)", f["tap_hammered_latency_ms_p50"], f["tap_latency_ms_p50"]),
            ("tap latency p99, ms (hammered / quiet)", f["tap_hammered_latency_ms_p99"], f["tap_latency_ms_p99"]),
            ("tap latency p99, ms (quiet / endpoint off)", f["tap_latency_ms_p99"], f["baseline_tap_latency_ms_p99"])]
    print(f"   {'':44} {'endpoint':>10} {'baseline':>10}")
    for name, a, b in rows:
        print(f"   {name:44} {a:>10} {b:>10}")
    print(f"   {'requests/s (p50 / p99 ms) [live heap max, KB]':44} {'1 client':>30} {f'{CLIENTS} clients':>30}")
    for r in ROUTES:
        one, many = (f"{f[f'{r}_rps_{n}']} ({f[f'{r}_latency_ms_p50_{n}']} / {f[f'{r}_latency_ms_p99_{n}']})"
                     f" [{f[f'{r}_heap_max_bytes_{n}'] / 1024:.1f}]" for n in (1, CLIENTS))
        print(f"   {'GET /api/v1/' + r:44} {one:>30} {many:>30}")
    print(f"   ({CLIENTS} clients on the default 3 slots: requests sent again after an eviction: "
          + ", ".join(f"{r} {f[f'{r}_reconnects_{CLIENTS}']}" for r in ROUTES)
          + f"; {f['hammer_rps']} requests/s answered while the taps ran)")
    print(f"   {'HTTPS beside plain HTTP':44} {'https':>10} {'http':>10}")
    for name, key in (("live heap listening, bytes", "heap_idle_bytes"),
                      ("... one kept-alive client", "heap_idle_connected_bytes"),
                      ("new connection + GET health p50, ms", "connect_get_ms_p50"),
                      ("GET status/s on one kept-alive connection", "status_rps_1")):
        plain = f.get("plain_" + key, f.get(key))
        print(f"   {name:44} {f['tls_' + key]:>10} {plain:>10}")


def run() -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="bench-endpoint-") as t:
        tmp = Path(t)
        f = _baseline(tmp)
        f.update(_endpoint(tmp))
        f.update(_tls(tmp))
    image = image_alloc(bundle.build("sim"))
    for k in [k for k in f if "heap" in k and "free" not in k]:
        f[k] -= image
    f["heap_idle_cost_bytes"] = f["heap_idle_bytes"] - f["baseline_heap_idle_bytes"]
    f["heap_idle_connected_cost_bytes"] = f["heap_idle_connected_bytes"] - f["baseline_heap_idle_bytes"]
    f["heap_serving_cost_bytes"] = f["heap_serving_max_bytes"] - f["baseline_heap_busy_max_bytes"]
    f["heap_serving_one_cost_bytes"] = (max(f[f"{r}_heap_max_bytes_1"] for r in ROUTES)
                                        - f["baseline_heap_busy_max_bytes"])
    f["tls_heap_idle_cost_bytes"] = f["tls_heap_idle_bytes"] - f["heap_idle_bytes"]
    f["tls_heap_connected_cost_bytes"] = f["tls_heap_idle_connected_bytes"] - f["heap_idle_connected_bytes"]
    _table(f)
    return {"endpoint": f}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))
