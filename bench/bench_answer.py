"""answer.*: the heap a device-endpoint answer holds at its largest moment, one client on a kept-alive
connection.

A sim terminal booted as `bench.heapmap` boots it (one micropython process, a roomy heap; its endpoint on
plain HTTP, one read token), with a task that collects and samples the live heap at every event-loop
turn. A host client connects and asks once; then, for each phase of QUIET_S and BUSY_S seconds, the
largest sample is taken (less the ROMFS image the host holds in its heap, as in bench_heap): with the
client connected and quiet (`quiet_bytes`, the baseline: what the connection holds between requests,
and the sampler's own share), then while the client asks for one route again and again
(`<route>_bytes`). `<route>_inflight_bytes` is the difference: what an answer holds while it is sent
(its coroutine frames, the document or line being written, what the collector cannot yet tell from
live data). One terminal per route; `<route>_requests` is how many it answered meanwhile.

bench_endpoint samples over the control port, between answers more often than within one; this bench
sees the moment an answer is largest. bench_frozen runs it on the frozen interpreter (`frozen.answer_*`).
"""

from __future__ import annotations

import http.client
import subprocess
import tempfile
import threading
from pathlib import Path

from clockterm_host import bundle

from bench import heapmap
from bench.bench_heap import image_alloc

ROUTES = ("health", "status", "metrics", "punches")
QUIET_S = 1.0
BUSY_S = 2.0

# After heapmap's boot (its script up to the endpoint client): the sampler, phase by phase, told by lines
_TAIL = r"""
    mx = [0]
    async def sampler():
        while True:
            gc.collect()
            u = gc.mem_alloc()
            if u > mx[0]:
                mx[0] = u
            await asyncio.sleep_ms(0)
    print("READY")
    await asyncio.sleep_ms(1000)  # the host connects and asks once meanwhile
    asyncio.create_task(sampler())
    await asyncio.sleep_ms(QUIET_MS)
    print("QUIET %d" % mx[0])
    mx[0] = 0
    await asyncio.sleep_ms(BUSY_MS)
    print("BUSY %d" % mx[0])
    await asyncio.sleep_ms(1000)  # the host stops asking before the terminal goes (else a reset may hit it)
    sys.exit(0)
asyncio.run(go())
"""


def _script() -> str:
    s = heapmap._SCRIPT
    return s[:s.index("    # The device endpoint: a client")] + _TAIL


def _one(route: str, tmp: Path) -> dict[str, int]:
    argv, env, out, port = heapmap.launch(tmp, _script(), f"QUIET_MS = {int(QUIET_S * 1000)}\n"
                                                          f"BUSY_MS = {int(BUSY_S * 1000)}\n")
    err = open(tmp / "stderr", "w")
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=err, text=True, cwd=out)
    stuck = threading.Timer(60, p.kill)  # a terminal that hangs ends the bench (its lines stop: EOF)
    stuck.start()
    got: dict[str, int] = {}
    asked = [0]
    failed: list[BaseException] = []
    busy = threading.Event()
    done = threading.Event()
    try:
        for ln in p.stdout:
            if ln.startswith("READY"):
                break
        else:
            raise RuntimeError(f"the terminal did not start: {_tail(tmp)}")
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        def ask() -> None:
            c.request("GET", f"/api/v1/{route}", headers={"Authorization": f"Bearer {heapmap.TOKEN}"})
            r = c.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"{route} answered {r.status}")
            asked[0] += 1

        def client() -> None:
            busy.wait()
            try:
                while not done.is_set():
                    ask()
            except Exception as e:  # the terminal ends the phase mid-answer: only an error before counts
                if not done.is_set():
                    failed.append(e)

        ask()
        t = threading.Thread(target=client, daemon=True)
        t.start()
        for ln in p.stdout:
            word, _, n = ln.partition(" ")
            if word in ("QUIET", "BUSY"):
                got[word.lower()] = int(n)
                if word == "QUIET":
                    asked[0] = 0
                    busy.set()
                else:
                    done.set()
                    break
        done.set()
        t.join(15)
        c.close()
    finally:
        stuck.cancel()
        p.kill()
        p.wait()
        err.close()
    if failed:
        raise RuntimeError(f"{route}: {failed[0]!r}")
    if set(got) != {"quiet", "busy"}:
        raise RuntimeError(f"{route}: the terminal stopped early: {_tail(tmp)}")
    return {"quiet": got["quiet"], "busy": got["busy"], "requests": asked[0]}


def _tail(tmp: Path) -> str:
    return (tmp / "stderr").read_text(errors="replace")[-2000:]


def run() -> dict[str, dict[str, float]]:
    f: dict[str, float] = {}
    quiet = []
    image = image_alloc(bundle.build("sim"))  # the ROMFS image the host holds in its heap (0 frozen)
    with tempfile.TemporaryDirectory(prefix="bench-answer-") as t:
        for route in ROUTES:
            d = Path(t) / route
            d.mkdir()
            r = _one(route, d)
            quiet.append(r["quiet"] - image)
            f[f"{route}_bytes"] = r["busy"] - image
            f[f"{route}_inflight_bytes"] = r["busy"] - r["quiet"]
            f[f"{route}_requests"] = r["requests"]
    f["quiet_bytes"] = max(quiet)  # (the same terminal each time: they agree within a block or two)
    print("   " + ", ".join(f"{r} +{f[f'{r}_inflight_bytes']:,} B ({f[f'{r}_requests']} answers)" for r in ROUTES)
          + " above the client connected and quiet")
    return {"answer": f}
