"""A Mosquitto broker process on a loopback port, configured from the files in `deploy/mosquitto/`.

Tests and `controlplane bench mqtt` start their own broker with `MosquittoBroker`: it renders the shipped
configuration (`mosquitto.conf`, the `acl` file) into a work directory, writes a password file with
`mosquitto_passwd`, and runs the `mosquitto` binary on a free port of 127.0.0.1. `restart` keeps the port
and the persistence directory, so sessions, queued QoS 1 messages and retained state come back.
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from controlplane import (
    free_port,
)

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto"
CENTRAL_USER = "controlplane"


class BrokerUnavailable(RuntimeError):
    """The mosquitto binary is missing or the broker did not start."""


def render_config(
    port: int,
    data_dir: Path,
    password_file: Path,
    acl_file: Path,
    bind: str = "127.0.0.1",
    tls: Mapping[str, str] | None = None,
) -> str:
    """The shipped mosquitto.conf with its fields filled in; `tls` has cafile, certfile, keyfile."""
    tls_lines = "\n".join(f"{key} {value}" for key, value in (tls or {}).items())
    text = (DEPLOY_DIR / "mosquitto.conf").read_text()
    for field, value in {
        "@PORT@": str(port),
        "@BIND@": bind,
        "@USER@": getpass.getuser(),
        "@TLS@": tls_lines,
        "@PASSWORD_FILE@": str(password_file),
        "@ACL_FILE@": str(acl_file),
        "@DATA_DIR@": str(data_dir),
    }.items():
        text = text.replace(field, value)
    return text


class MosquittoBroker:
    """One mosquitto process with users (name -> password) and the shipped ACLs; start/stop/restart/kill."""

    def __init__(
        self,
        work_dir: Path,
        users: Mapping[str, str],
        port: int | None = None,
        tls: Mapping[str, str] | None = None,
    ) -> None:
        """`tls` (cafile, certfile, keyfile: PEM paths) makes the listener TLS-only."""
        self.work_dir = Path(work_dir)
        self.users = dict(users)
        self.tls = dict(tls) if tls else None
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.config_file = self.work_dir / "mosquitto.conf"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def _prepare(self) -> None:
        binary = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else ""
        )
        passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        if not binary or not os.path.exists(passwd):
            raise BrokerUnavailable(
                "mosquitto is not installed: run `make system-deps` (Debian package mosquitto)"
            )
        self.binary = binary
        self.work_dir.mkdir(parents=True, exist_ok=True)
        password_file = self.work_dir / "passwords"
        password_file.write_text("")
        for user, password in self.users.items():
            subprocess.run(
                [passwd, "-b", str(password_file), user, password], check=True, capture_output=True
            )
        acl_file = self.work_dir / "acl"
        shutil.copyfile(DEPLOY_DIR / "acl", acl_file)
        # Mosquitto refuses to read secrets others can read (and warns about it in 2.0).
        for path in (password_file, acl_file):
            path.chmod(0o600)
        self.config_file.write_text(
            render_config(self.port, self.work_dir, password_file, acl_file, tls=self.tls)
        )

    def start(self, timeout: float = 5.0) -> MosquittoBroker:
        if not self.config_file.exists():
            self._prepare()
        log = open(self.work_dir / "stderr.log", "ab")  # noqa: SIM115 - the process owns it
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config_file)], stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        # The broker runs in a session of its own (a restart must not depend on the thread that started
        # it), so it does not die with this process by itself: stop it at exit.
        atexit.register(self.kill)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerUnavailable(f"mosquitto exited with {self.process.returncode}: {self._tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.02)
        self.kill()
        raise BrokerUnavailable(f"mosquitto did not listen on port {self.port} within {timeout:g} s")

    def _tail(self) -> str:
        texts = []
        for name in ("stderr.log", "mosquitto.log"):
            path = self.work_dir / name
            if path.exists():
                texts.append(path.read_text(errors="replace")[-2000:])
        return "\n".join(texts)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (mosquitto saves its persistence file), then wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5.0)
        self.process = None

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        if down_seconds:
            time.sleep(down_seconds)
        self.start()

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
