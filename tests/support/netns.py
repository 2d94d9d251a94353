"""Hosts in network namespaces for tests: a worker "host" whose network link a test can cut.

``netns_host()`` makes a namespace joined to this machine by a veth pair in a private /30
(``10.200.x.y``, chosen free at random); traffic between the two ends stays on that pair. The
database and broker the namespaced processes reach must listen on the root end's address, and
the machine's PostgreSQL and Redis listen on 127.0.0.1 only, so ``private_postgres()`` and
``PrivateRedis`` start servers of their own on that address (the shared ones are untouched).

Everything is removed when its context ends, on failure too: the namespace (deleting it
deletes the veth pair), the PostgreSQL cluster and its directory, the Redis server.
"""

from __future__ import annotations

import contextlib
import glob
import ipaddress
import random
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.processes import ManagedProcess

SUBNET_POOL = ipaddress.ip_network("10.200.0.0/16")


def _ip(*args: str, namespace: str = "") -> subprocess.CompletedProcess:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    return subprocess.run([*prefix, "ip", *args], check=True, capture_output=True, text=True, timeout=30)


def netns_unavailable() -> str:
    """Why network namespaces cannot be used here, or "" when they can."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"probe-{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"ip netns add is not permitted: {exc.stderr.strip()}"
    _ip("netns", "del", probe)
    return ""


@dataclass(frozen=True)
class NetnsHost:
    """A network namespace with a veth link to the root namespace."""

    name: str
    root_veth: str
    host_veth: str
    root_address: str  # the root namespace's end: servers listen here
    host_address: str  # the namespace's end: its processes connect from here
    network: str

    def command(self, args: list[str]) -> list[str]:
        """``args`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def cut(self) -> None:
        """Take the link down inside the namespace: nothing passes either way, and neither
        end is told (no FIN, no RST), as when a host loses its network."""
        _ip("link", "set", self.host_veth, "down", namespace=self.name)

    def restore(self) -> None:
        """Bring the link back up: the network returns (its /30 route comes back with it)."""
        _ip("link", "set", self.host_veth, "up", namespace=self.name)


def _free_subnet() -> ipaddress.IPv4Network:
    # Random, and overlapping no address or route this machine has (another test run's pair).
    listing = _ip("-4", "-o", "addr", "show").stdout + _ip("-4", "route", "show", "table", "all").stdout
    used = [ipaddress.ip_network(text, strict=False) for text in re.findall(r"\d+\.\d+\.\d+\.\d+(?:/\d+)?", listing)]
    used = [network for network in used if network.prefixlen > 0]
    for _ in range(100):
        candidate = ipaddress.ip_network(f"10.200.{random.randrange(256)}.{4 * random.randrange(64)}/30")
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise RuntimeError(f"no free /30 in {SUBNET_POOL}")


@contextlib.contextmanager
def netns_host() -> Iterator[NetnsHost]:
    """A namespace "host" with a veth link to this machine; removed when the context ends."""
    token = uuid.uuid4().hex[:6]
    network = _free_subnet()
    root_address, host_address = (str(address) for address in network.hosts())
    host = NetnsHost(
        name=f"lost-host-{token}",
        root_veth=f"lhr{token}",
        host_veth=f"lhh{token}",
        root_address=root_address,
        host_address=host_address,
        network=str(network),
    )
    try:
        _ip("netns", "add", host.name)
        _ip("link", "add", host.root_veth, "type", "veth", "peer", "name", host.host_veth)
        _ip("link", "set", host.host_veth, "netns", host.name)
        _ip("addr", "add", f"{root_address}/30", "dev", host.root_veth)
        _ip("link", "set", host.root_veth, "up")
        _ip("addr", "add", f"{host_address}/30", "dev", host.host_veth, namespace=host.name)
        _ip("link", "set", host.host_veth, "up", namespace=host.name)
        _ip("link", "set", "lo", "up", namespace=host.name)
        yield host
    finally:
        # Deleting the namespace deletes its veth end, and with it the pair.
        subprocess.run(["ip", "netns", "del", host.name], check=False, capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", host.root_veth], check=False, capture_output=True, timeout=30)


def free_port_on(address: str) -> int:
    """A TCP port nobody listens on at ``address`` right now."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class PrivatePostgres:
    """A PostgreSQL cluster of one test, listening on one address, trusting one /30."""

    address: str
    port: int
    data_dir: Path
    log_path: Path

    def url(self, database: str) -> str:
        return f"postgres://postgres@{self.address}:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        """An autocommit connection without the platform's session bounds: an observer."""
        return psycopg.connect(self.url(database), autocommit=True, connect_timeout=10)

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its URL."""
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError(f"{name} not found under /usr/lib/postgresql/*/bin")
    return found[-1]


def _as_postgres(args: list[str]) -> None:
    # initdb and the server refuse to run as root.
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=120, user="postgres", group="postgres")


@contextlib.contextmanager
def private_postgres(address: str, network: str) -> Iterator[PrivatePostgres]:
    """initdb and start a throwaway cluster on ``address`` (trust for ``network`` only)."""
    # In the system's temporary directory: the postgres user must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="private-pg-"))
    shutil.chown(root, "postgres", "postgres")
    server = PrivatePostgres(address, free_port_on(address), root / "data", root / "server.log")
    pg_ctl = _pg_bin("pg_ctl")
    try:
        _as_postgres([_pg_bin("initdb"), "-D", str(server.data_dir), "-U", "postgres", "-A", "trust", "--no-sync"])
        (server.data_dir / "pg_hba.conf").write_text(f"local all all trust\nhost all all {network} trust\n")
        with (server.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{address}'\nport = {server.port}\nunix_socket_directories = '{root}'\n"
                "fsync = off\nfull_page_writes = off\nshared_buffers = 16MB\nmax_connections = 40\n"
                # Which bound ended a session, and who waited on which lock, in the test's output.
                "log_line_prefix = '%m [%p] %a '\nlog_lock_waits = on\n"
            )
        _as_postgres([pg_ctl, "-D", str(server.data_dir), "-l", str(server.log_path), "-w", "-t", "60", "start"])
        yield server
    finally:
        if (server.data_dir / "postmaster.pid").exists():
            subprocess.run(
                [pg_ctl, "-D", str(server.data_dir), "-m", "immediate", "-w", "stop"],
                check=False, capture_output=True, timeout=60, user="postgres", group="postgres",
            )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


class PrivateRedis(ManagedProcess):
    """A ``redis-server`` on ``address`` and a free port, no persistence."""

    ready_marker = "Ready to accept connections"

    def __init__(self, address: str, *, port: int | None = None) -> None:
        self.address = address
        # An address inside a namespace cannot be bound from here; a new namespace has every
        # port free, so the caller names one.
        self.port = port or free_port_on(address)
        binary = shutil.which("redis-server") or "redis-server"
        # Reachable only on the test's private /30, so protected mode (loopback only) is off.
        args = [binary, "--bind", address, "--port", str(self.port), "--save", "", "--appendonly", "no"]
        args += ["--protected-mode", "no"]
        super().__init__(args, name="private-redis")

    @property
    def url(self) -> str:
        return f"redis://{self.address}:{self.port}/0"


def in_namespace(process: ManagedProcess, host: NetnsHost) -> ManagedProcess:
    """``process``, to be started inside ``host``'s namespace (``ip netns exec`` execs it, so
    the process keeps its pid and process group, and stopping it works as usual)."""
    process.args = host.command(process.args)
    return process
