"""Real parts of a scale-out on loopback: a PostgreSQL server, rnnstream replicas as processes
(``python -m rnnstream.service``), and nginx rendered from ``deploy/nginx/nginx.conf``.

Used by tests/scaleout and bench/scaleout.py. PostgreSQL refuses to run as root, so when this
runs as root (CI does) the server runs as the ``postgres`` user (or ``nobody``) in a
directory of its own under /tmp.
"""
from __future__ import annotations

import os
import pathlib
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from tests.service.conftest import ServerProcess

REPO = pathlib.Path(__file__).resolve().parents[2]
NGINX_CONF = REPO / "deploy" / "nginx" / "nginx.conf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for root in sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    raise FileNotFoundError(f"{name} not found: install PostgreSQL (apt-get install -y postgresql)")


def _unprivileged_user() -> str | None:
    """None when not root; else the account PostgreSQL runs as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root with neither a 'postgres' nor a 'nobody' user to run PostgreSQL as")


class Postgres:
    """``initdb`` + ``postgres`` on 127.0.0.1:<free port>, trust auth, database ``rnnstream``."""

    def __init__(self, fsync: bool = True):
        self.user = _unprivileged_user()
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="rnnstream-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._as_user([_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "rnnstream", "--no-sync"],
                      check=True)
        self.log = open(self.dir / "postgres.log", "ab")
        flags = ["-c", "listen_addresses=127.0.0.1", "-p", str(self.port), "-k", str(self.dir),
                 "-c", "max_connections=200"]
        if not fsync:
            flags += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
        self.proc = subprocess.Popen(self._wrap([_pg_bin("postgres"), "-D", str(self.data), *flags]),
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()
        self._as_user([_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "rnnstream",
                       "rnnstream"], check=True)
        self.url = f"postgresql://rnnstream@127.0.0.1:{self.port}/rnnstream"

    def _wrap(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", self.user, "--", *args] if self.user else args

    def _as_user(self, args: list[str], check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(self._wrap(args), capture_output=True, check=check, timeout=120, cwd=self.dir)

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited:\n" + (self.dir / "postgres.log").read_text()[-3000:])
            if self._as_user([_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)]).returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("postgres did not start")

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        # signal postgres itself: runuser in between does not pass a SIGKILL on, and a
        # postgres orphaned that way would outlive the test
        pid = self._postmaster_pid()
        for sig, wait_s in ((signal.SIGINT, 30), (signal.SIGQUIT, 10), (signal.SIGKILL, 10)):  # fast, immediate
            if self.proc.poll() is not None:
                break
            try:
                os.kill(pid, sig) if pid else self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def render_nginx_conf(upstream_ports: list[int], listen_port: int, workdir: pathlib.Path) -> str:
    """deploy/nginx/nginx.conf with the replicas and the listener on loopback, one worker, and
    its pid and temporary files under ``workdir``."""
    text = NGINX_CONF.read_text()
    servers = re.findall(r"^\s*server rnnstream-\d+:50051 (.*);$", text, flags=re.M)
    assert servers, "deploy/nginx/nginx.conf lost its 'server rnnstream-N:50051 ...;' lines"
    options = servers[0]
    lines = "\n".join(f"        server 127.0.0.1:{p} {options};" for p in upstream_ports)
    text = re.sub(r"(^\s*server rnnstream-\d+:50051 .*;\n)+", lines + "\n", text, flags=re.M)
    text = text.replace("listen 50051 http2;", f"listen 127.0.0.1:{listen_port} http2;")
    text = text.replace("worker_processes auto;", "worker_processes 1;")
    text = text.replace("pid /tmp/nginx.pid;", f"pid {workdir}/nginx.pid;")
    temp = "".join(f"    {kind}_temp_path {workdir}/{kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    text = text.replace("http {\n", "http {\n" + temp, 1)
    if os.geteuid() == 0:
        text = "user root;\n" + text
    return text


class Nginx:
    def __init__(self, upstream_ports: list[int]):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="rnnstream-nginx-"))
        self.port = free_port()
        conf = self.dir / "nginx.conf"
        conf.write_text(render_nginx_conf(upstream_ports, self.port, self.dir))
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        test = subprocess.run([binary, "-t", "-p", str(self.dir), "-c", str(conf)], capture_output=True, text=True)
        if test.returncode:
            raise RuntimeError(f"nginx -t refused the rendered config:\n{test.stderr}")
        self.log = open(self.dir / "nginx.log", "ab")
        self.proc = subprocess.Popen([binary, "-p", str(self.dir), "-c", str(conf), "-g", "daemon off;"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start:\n" + (self.dir / "nginx.log").read_text())
                time.sleep(0.05)
        self.address = f"127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_replicas(n: int, store_url: str, workdir: pathlib.Path, *flags: str) -> list[ServerProcess]:
    """``n`` replicas on the shared store, each with its own (unused) data dir and log."""
    replicas = []
    workdir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        replicas.append(ServerProcess(workdir / f"replica{i}", "--store", store_url, "--metrics-port", "-1", *flags,
                                      log_path=workdir / f"replica{i}.log"))
    return replicas


def stop(parts) -> None:
    """Close whatever was started, last first, skipping what is not there."""
    for part in reversed([p for p in parts if p is not None]):
        try:
            part.close()
        except Exception:  # noqa: BLE001 - best effort at teardown; the test has its verdict
            pass
