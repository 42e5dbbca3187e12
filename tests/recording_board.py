"""A stand-in for a board behind device.Session, for tests of what a host command does to the board and
in which order (tests/test_deploy_choice.py, tests/test_session_start.py): `done` records each step,
`files` what was written; a soft reset can be made to fail (a board that does not come back)."""

from __future__ import annotations

import hashlib

from clockterm_host.device import DeviceError


class RecordingBoard:
    def __init__(self, reset_fails: bool = False):
        self.done: list[str] = []  # what was done to the board, in order
        self.files: dict[str, bytes] = {}
        board = self

        class Session:
            def __init__(self, port: str, baud: int = 115200):
                board.done.append("session")

            def soft_reset(self) -> None:
                board.done.append("soft reset")
                if reset_fails:
                    raise DeviceError("the board did not come back from a soft reset (test)")

            def exec(self, code: str, timeout: float = 30) -> str:
                board.done.append("exec")
                return '{"crashes": 0}\n'

            def write(self, path: str, data: bytes) -> None:
                board.done.append("write " + path)
                board.files[path] = data

            def hashes(self, paths: list[str]) -> dict[str, str | None]:
                return {p: hashlib.sha256(board.files[p]).hexdigest() if p in board.files else None for p in paths}

            def restart(self) -> None:
                board.done.append("restart")

            def close(self) -> None:
                board.done.append("close")

        self.Session = Session

    @property
    def restarts(self) -> int:
        return self.done.count("restart")
