"""The central's admin credential: a bearer token kept as hex in `<state>/admin.token` (mode 0600).

Created at the first `central serve` (or start of the test server) and kept from then on; every admin
route checks it (app.AdminAuth). CLI commands that talk to a running central read it from the state
folder or from a file named with --admin-token-file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

FILE = "admin.token"


def ensure(state: Path) -> str:
    """The state folder's admin token, created (32 random bytes as hex, owner-only) when it has none."""
    path = Path(state) / FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    return read(path)


def read(path: Path) -> str:
    """The token in a token file; SystemExit with the reason when it is missing or not a token."""
    try:
        tok = Path(path).read_text().strip()
    except OSError as e:
        raise SystemExit(f"admin token: cannot read {path} ({e.strerror}); it is created by 'central serve' "
                         "in its state folder") from None
    if len(tok) < 32 or any(c not in "0123456789abcdef" for c in tok.lower()):
        raise SystemExit(f"admin token: {path} does not hold a token (hex)")
    return tok


def locate(state: Path | None, token_file: Path | None) -> str:
    """The token for a CLI command: from --admin-token-file, else from the central's state folder."""
    if token_file is not None:
        return read(token_file)
    if state is not None:
        return read(Path(state) / FILE)
    raise SystemExit("admin token: give --admin-token-file FILE or --central-state DIR (the central's state folder)")
