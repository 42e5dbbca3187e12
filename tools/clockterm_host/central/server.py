"""Run the reference central: HTTPS API plus a loopback admin port, in the foreground or a thread."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import uvicorn

from ..defaults import DEVICE_ID
from . import admintoken, tls
from .app import Central, build_admin, build_api
from .store import Store

log = logging.getLogger("clockterm.central")
DEFAULT_DEVICES = DEVICE_ID  # the device id of the default config (`clockterm config`)


def parse_devices(spec: str | None) -> list[tuple[str, str | None]]:
    """'term-1:secret,term-2' -> [(id, secret or None)]; ValueError for an entry without an id."""
    out = []
    for part in (spec or "").split(","):
        part = part.strip()
        if part:
            dev, _, sec = part.partition(":")
            if not dev.strip():
                raise ValueError(f"devices: {part!r} has no device id (id[:secret],...)")
            out.append((dev.strip(), sec or None))
    return out


def setup_state(state: Path, devices: str | None,
                hosts: list[str]) -> tuple[Store, dict[str, str], dict[str, Path]]:
    """Create CA/certs, the admin token and the database; register devices (secrets kept in
    devices.json); return them."""
    state.mkdir(parents=True, exist_ok=True)
    admintoken.ensure(state)
    pems = tls.ensure(state, hosts)
    store = Store(state / "central.db")
    dfile = state / "devices.json"
    known: dict[str, str] = json.loads(dfile.read_text()) if dfile.exists() else {}
    for dev, sec in parse_devices(devices if devices is not None else (None if known else DEFAULT_DEVICES)):
        known[dev] = sec or known.get(dev) or ""
        known[dev] = store.add_device(dev, known[dev] or None)
    for dev, sec in known.items():
        if store.device(dev) is None:
            store.add_device(dev, sec)
    dfile.write_text(json.dumps(known, indent=1, sort_keys=True))
    dfile.chmod(0o600)
    return store, known, pems


def _bind(host: str, port: int) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when their proto says TCP,
    # and a socket made with proto 0 passes that on. Without it the answer's head and body (two TLS
    # records) are held by Nagle until the terminal's delayed ACK: about 40 ms per request.
    s = socket.socket(fam, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.bind((host, port))
    s.listen(128)
    s.set_inheritable(True)
    return s


def _servers(c: Central, pems: dict[str, Path], api_sock: socket.socket,
             admin_sock: socket.socket | None) -> list[uvicorn.Server]:
    cfg = uvicorn.Config(build_api(c), ssl_certfile=str(pems["good"]), log_level="warning", lifespan="off",
                         timeout_keep_alive=15, timeout_graceful_shutdown=1, access_log=False)
    cfg.load()
    assert isinstance(cfg.ssl, ssl.SSLContext)
    variants = tls.contexts(pems)

    def sni(sslobj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        if c.faults.tls != "good":  # tests switch the presented certificate at run time
            sslobj.context = variants[c.faults.tls]

    cfg.ssl.sni_callback = sni  # type: ignore[assignment]
    servers = [uvicorn.Server(cfg)]
    if admin_sock is not None:
        acfg = uvicorn.Config(build_admin(c), log_level="warning", lifespan="off", access_log=False,
                              timeout_graceful_shutdown=1)
        servers.append(uvicorn.Server(acfg))
    return servers


@dataclass
class Handle:
    """A running central: .url (https), .admin_url (plain, loopback), .ca_path, .devices, .stop()."""

    url: str
    admin_url: str
    admin_token: str
    ca_path: Path
    state: Path
    port: int
    devices: dict[str, str]
    central: Central
    _servers: list[uvicorn.Server] = field(repr=False, default_factory=list)
    _thread: threading.Thread | None = field(repr=False, default=None)

    @property
    def store(self) -> Store:
        return self.central.store

    @property
    def ca_der(self) -> bytes:
        return tls.ca_der(self.state)

    def set_faults(self, **kw: Any) -> None:
        self.central.faults.update(kw)

    def admin(self, path: str, body: Any = None) -> Any:
        """Call the admin API (with its token): GET, or POST of body (bytes as they are, else JSON)."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = Request(self.admin_url + path, data=data, headers={"Authorization": f"Bearer {self.admin_token}"})
        with urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        for s in self._servers:
            s.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.central.store.close()

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_background(state_dir: str | Path, port: int = 0, devices: str | None = None,
                     host: str = "127.0.0.1", admin_port: int = 0, url_host: str = "localhost") -> Handle:
    """Start the central in a daemon thread; returns once it accepts connections."""
    state = Path(state_dir)
    store, known, pems = setup_state(state, devices, [host, url_host])
    c = Central(store, admintoken.ensure(state))
    api_sock = _bind(host, port)
    admin_sock = _bind("127.0.0.1", admin_port)
    servers = _servers(c, pems, api_sock, admin_sock)
    ready = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        async def main() -> None:
            tasks = [asyncio.create_task(servers[0].serve(sockets=[api_sock])),
                     asyncio.create_task(servers[1].serve(sockets=[admin_sock]))]
            while not all(s.started for s in servers):
                if any(t.done() for t in tasks):
                    break
                await asyncio.sleep(0.01)
            ready.set()
            await asyncio.gather(*tasks)
        try:
            asyncio.run(main())
        except BaseException as e:  # reported to the starter if it happens before ready
            errors.append(e)
            log.exception("central server failed")
        finally:
            ready.set()
            api_sock.close()
            admin_sock.close()

    t = threading.Thread(target=run, name="central", daemon=True)
    t.start()
    ready.wait(30)
    if errors or not all(s.started for s in servers):
        raise RuntimeError(f"central did not start: {errors}")
    p = api_sock.getsockname()[1]
    return Handle(url=f"https://{url_host}:{p}", admin_url=f"http://127.0.0.1:{admin_sock.getsockname()[1]}",
                  admin_token=c.admin_token, ca_path=state / "ca.pem", state=state, port=p, devices=known, central=c,
                  _servers=servers, _thread=t)


def serve(state_dir: str | Path, host: str, port: int, devices: str | None, admin_port: int,
          url_host: str = "localhost") -> None:
    """Run in the foreground until interrupted. A state folder that cannot be made, bad --devices or an
    address that cannot be listened on end it with SystemExit and a message."""
    state = Path(state_dir)
    try:
        store, known, pems = setup_state(state, devices, [host, url_host])
        c = Central(store, admintoken.ensure(state))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    except OSError as e:
        raise SystemExit(f"state folder {state}: {e.strerror or e}") from None
    try:
        api_sock, admin_sock = _bind(host, port), _bind("127.0.0.1", admin_port)
    except OSError as e:
        why = " (another central running? give it another --port)" if e.errno == errno.EADDRINUSE else ""
        raise SystemExit(f"cannot listen on {host}:{port}: {e.strerror or e}{why}") from None
    servers = _servers(c, pems, api_sock, admin_sock)
    print(f"central API  https://{url_host}:{api_sock.getsockname()[1]}  (CA {state / 'ca.pem'})")
    print(f"admin        http://127.0.0.1:{admin_sock.getsockname()[1]}  (token in {state / admintoken.FILE})")
    print(f"devices      {', '.join(f'{d}:{s}' for d, s in known.items())}", flush=True)

    async def main() -> None:
        await asyncio.gather(servers[0].serve(sockets=[api_sock]), servers[1].serve(sockets=[admin_sock]))

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
