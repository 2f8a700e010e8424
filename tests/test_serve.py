"""`tessera api --workers N`: each server process listens on a socket of its own (SO_REUSEPORT), so
the connections spread over the processes; a process that dies is started again."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import Counter

import psutil

from bench.chaos.servers import free_port, wait_up
from tests.conftest import Processes


def _servers(api_pid: int) -> list[psutil.Process]:
    """The live server processes `tessera api` started (not multiprocessing's resource tracker)."""
    servers = []
    for child in psutil.Process(api_pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                servers.append(child)
        except psutil.Error:  # gone meanwhile
            continue
    return servers


def _serving(port: int, processes: list[psutil.Process], status: str) -> Counter[int]:
    """pid → how many TCP sockets in `status` on `port` it holds (local port)."""
    found: Counter[int] = Counter()
    for process in processes:
        for conn in process.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == status:
                found[process.pid] += 1
    return found


def _open(port: int, count: int) -> list[socket.socket]:
    """`count` kept-alive connections, each having had one answer (so each is accepted)."""
    opened = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        opened.append(sock)
    return opened


def test_each_server_process_listens_on_its_own_socket_and_gets_a_share_of_the_connections(
    processes: Processes,
) -> None:
    port = free_port()
    api = processes.start("api", "--port", str(port), "--workers", "2")
    wait_up(f"http://127.0.0.1:{port}")
    servers = _servers(api.pid)
    assert len(servers) == 2
    assert _serving(port, servers, psutil.CONN_LISTEN) == {s.pid: 1 for s in servers}
    connections = _open(port, 24)
    try:
        shares = _serving(port, servers, psutil.CONN_ESTABLISHED)
        assert sum(shares.values()) == 24
        # Spread by the kernel's hash: fewer than 4 of 24 on one side has a chance of ~1e-4.
        assert min(shares[s.pid] for s in servers) >= 4, shares
    finally:
        for sock in connections:
            sock.close()


def test_a_server_process_that_dies_is_started_again(processes: Processes) -> None:
    port = free_port()
    api = processes.start("api", "--port", str(port), "--workers", "2")
    url = f"http://127.0.0.1:{port}"
    wait_up(url)
    killed = _servers(api.pid)[0]
    os.kill(killed.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while {s.pid for s in _servers(api.pid)} & {killed.pid} or len(_servers(api.pid)) < 2:
        assert time.monotonic() < deadline, "the dead server process was not replaced"
        time.sleep(0.1)
    replacement = next(s for s in _servers(api.pid) if s.pid != killed.pid)
    while not _serving(port, [replacement], psutil.CONN_LISTEN):
        assert time.monotonic() < deadline, "the new server process does not listen"
        time.sleep(0.1)
    wait_up(url)
    processes.stop(api)
    assert api.returncode == 0
