"""One job, many subscribers: how long after the first of them does each get each event?

Starts `convertd serve` (one worker slot), queues a job that keeps the worker busy, then a
second job and opens N graphql-transport-ws subscriptions to the second one, from a few
client processes. When the second job runs, every subscriber records when each event
(status and progress) reached it. Prints, over all events and subscribers, the delay after
the first subscriber to get that event: p50, p99, max.

The clients share the machine's cores with the server, so what a client process does per
message lands in the figures. The default client (`--client raw`) is a few lines of
websocket over plain sockets on one epoll loop, and takes two clocks per message: the
kernel's receive timestamp of the packet (SO_TIMESTAMPNS: when the event reached the
subscriber's socket, whatever the client process was doing) and the moment the client read
it. `--client aiohttp` uses aiohttp's websocket client with one task per subscriber, as
an application would; its figures include that client's own work.

    .venv/bin/python -m bench.fanout [--subscribers 1000] [--clients 2] [--client raw|aiohttp]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import resource
import select
import signal
import socket
import statistics
import struct
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import requests

from bench.service import ROOT, photo, running, video

QUERY = "subscription($id: ID!) { jobUpdates(jobId: $id) { status progress } }"

# Linux (asm-generic/socket.h); Python's socket module does not name them
SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("@qq")

Arrival = tuple[str, float, float]  # event, reached the socket (kernel), read by the client


def _label(payload: dict) -> str:
    update = payload["data"]["jobUpdates"]
    return f"{update['status']}:{update['progress']}"


async def _subscribe(base: str, key: str, job_id: str, count: int, ready: object) -> list[Arrival]:
    """aiohttp's client, one task per subscriber; only the client's clock."""
    arrivals: list[Arrival] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(i: int) -> None:
            try:
                await subscriber(i)
            except Exception as exc:  # a subscriber that could not subscribe: said, not hung
                failed.append(f"{type(exc).__name__}: {exc}"[:200])

        async def subscriber(i: int) -> None:
            async with http.ws_connect(
                f"{base.replace('http', 'ws')}/graphql", protocols=["graphql-transport-ws"], max_msg_size=0
            ) as ws:
                await ws.send_json({"type": "connection_init", "payload": {"apiKey": key}})
                assert (await ws.receive_json())["type"] == "connection_ack"
                await ws.send_json(
                    {"id": "1", "type": "subscribe", "payload": {"query": QUERY, "variables": {"id": job_id}}}
                )
                first = True
                while True:
                    msg = await ws.receive_json()
                    now = time.time()
                    if msg["type"] != "next":
                        if first:
                            raise RuntimeError(f"subscription refused: {msg}")
                        return
                    if first:  # the snapshot, read when subscribing: not an event
                        first = False
                        counted.append(i)
                        continue
                    arrivals.append((_label(msg["payload"]), now, now))

        counted: list[int] = []
        failed: list[str] = []
        tasks = [asyncio.create_task(one(i)) for i in range(count)]
        while len(counted) + len(failed) < count:
            await asyncio.sleep(0.05)
        if failed:
            print(f"{len(failed)} subscribers failed, e.g. {failed[0]}", flush=True)
        ready.set()  # type: ignore[attr-defined]
        await asyncio.gather(*tasks)
    return arrivals


def _frame(obj: object, opcode: int = 0x1) -> bytes:
    """A masked client frame."""
    data = json.dumps(obj).encode() if opcode == 0x1 else obj
    assert isinstance(data, bytes)
    mask = os.urandom(4)
    n = len(data)
    size = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return bytes([0x80 | opcode]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """Whole server frames (unmasked) taken off the front of buf."""
    out = []
    while len(buf) >= 2:
        n, at = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, at = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, at = int.from_bytes(buf[2:10], "big"), 10
        if len(buf) < at + n:
            break
        out.append((buf[0] & 0x0F, bytes(buf[at : at + n])))
        del buf[: at + n]
    return out


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf, self.upgraded, self.state = sock, bytearray(), False, "init"
        self.messages: list[tuple[float, float, bytes]] = []  # kernel time, read time, text


def _raw(base: str, key: str, job_id: str, count: int, ready: object) -> list[Arrival]:
    url = urlsplit(base)
    request = (
        f"GET /graphql HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {{}}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
    )
    hello = _frame({"type": "connection_init", "payload": {"apiKey": key}}) + _frame(
        {"id": "1", "type": "subscribe", "payload": {"query": QUERY, "variables": {"id": job_id}}}
    )
    poll = select.epoll()
    conns: dict[int, _Conn] = {}
    for _ in range(count):
        sock = socket.create_connection((url.hostname, url.port), timeout=60)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.sendall(request.format(base64.b64encode(os.urandom(16)).decode()).encode() + hello)
        sock.setblocking(False)
        conns[sock.fileno()] = _Conn(sock)
        poll.register(sock.fileno(), select.EPOLLIN)
    subscribed = failed = 0
    open_ = count
    signalled = False
    while open_:
        if not signalled and subscribed + failed == count:
            if failed:
                print(f"{failed} subscribers failed", flush=True)
            ready.set()  # type: ignore[attr-defined]
            signalled = True
        for fd, _ in poll.poll(60):
            conn = conns[fd]
            data, ancillary, _flags, _addr = conn.sock.recvmsg(1 << 16, socket.CMSG_SPACE(TIMESPEC.size))
            read_at = time.time()
            kernel_at = read_at
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = TIMESPEC.unpack(value[: TIMESPEC.size])
                    kernel_at = sec + nsec / 1e9
            if not data:
                poll.unregister(fd)
                open_ -= 1
                if conn.state != "following":
                    failed += 1
                continue
            conn.buf += data
            if not conn.upgraded:
                head, sep, _rest = bytes(conn.buf).partition(b"\r\n\r\n")
                if not sep:
                    continue
                assert head.startswith(b"HTTP/1.1 101"), head[:200]
                del conn.buf[: len(head) + 4]
                conn.upgraded = True
            for opcode, payload in _frames(conn.buf):
                if opcode == 0x9:  # the server's heartbeat
                    conn.sock.sendall(_frame(payload, 0xA))
                elif opcode == 0x8:
                    poll.unregister(fd)
                    open_ -= 1
                elif opcode == 0x1 and conn.state == "following":
                    conn.messages.append((kernel_at, read_at, payload))  # decoded afterwards
                    if payload.startswith(b'{"id":"1","type":"complete"'):  # Strawberry's own format
                        poll.unregister(fd)
                        open_ -= 1
                elif opcode == 0x1:
                    kind = json.loads(payload)["type"]
                    if conn.state == "init" and kind == "connection_ack":
                        conn.state = "acked"
                    elif conn.state == "acked" and kind == "next":  # the snapshot: not an event
                        conn.state = "following"
                        subscribed += 1
                    else:
                        conn.state = "failed"
                        failed += 1
    arrivals: list[Arrival] = []
    for conn in conns.values():
        conn.sock.close()
        for kernel_at, read_at, text in conn.messages:
            msg = json.loads(text)
            if msg["type"] == "next":
                arrivals.append((_label(msg["payload"]), kernel_at, read_at))
    return arrivals


def _client(kind: str, base: str, key: str, job_id: str, count: int, ready: object, out: object) -> None:
    if kind == "raw":
        arrivals = _raw(base, key, job_id, count, ready)
    else:
        arrivals = asyncio.run(_subscribe(base, key, job_id, count, ready))
    out.put(arrivals)  # type: ignore[attr-defined]


def _convert(base: str, key: str, name: str, data: bytes, filetype: str, fmt: str, options: dict) -> str:
    r = requests.post(
        f"{base}/v1/convert",
        headers={"X-API-Key": key},
        files={"file": (name, data)},
        data={"filetype": filetype, "output_format": fmt, "options": json.dumps(options)},
    )
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def _measure(args: argparse.Namespace, root: Path) -> list[Arrival]:
    """One service from `root`, one job followed by every subscriber: the arrivals."""
    with running(root, CONVERTD_WORKER_CONCURRENCY="1") as service:
        tmp = Path(service.data_dir)
        blocker = video(tmp / "blocker.mp4", seconds=30)
        busy = _convert(
            service.base, service.key, "blocker.mp4", blocker.read_bytes(), "video", "webm",
            {"codec": "vp9", "preset": "slow"},  # cancelled once all are listening
        )  # fmt: skip
        job_id = _convert(
            service.base, service.key, "photo.jpg", photo(1600, 1200), "image", "webp", {"quality": 80}
        )
        ctx = multiprocessing.get_context("spawn")  # forked aiohttp clients garbled frames
        ready = [ctx.Event() for _ in range(args.clients)]
        out = ctx.Queue()
        share = [
            args.subscribers // args.clients + (i < args.subscribers % args.clients)
            for i in range(args.clients)
        ]
        procs = [
            ctx.Process(target=_client, args=(args.client, service.base, service.key, job_id, n, ev, out))
            for n, ev in zip(share, ready, strict=True)
        ]
        for p in procs:
            p.start()
        for ev in ready:
            ev.wait(300)
        status = requests.get(f"{service.base}/v1/status/{job_id}", headers={"X-API-Key": service.key}).json()
        if status["status"] != "pending":
            for p in procs:
                p.kill()
            blocker_status = requests.get(
                f"{service.base}/v1/status/{busy}", headers={"X-API-Key": service.key}
            ).json()
            raise SystemExit(f"the blocker ended before every subscriber was ready: {blocker_status}")
        spy = None
        if args.profile:
            spy = subprocess.Popen(
                ["py-spy", "record", "-p", str(service.pid), "-f", "raw", "-r", "500", "-o", args.profile],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(1)  # py-spy attaches
        requests.post(f"{service.base}/v1/cancel/{busy}", headers={"X-API-Key": service.key})
        arrivals = [a for _ in procs for a in out.get(timeout=600)]
        if spy:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        for p in procs:
            p.join()
    return arrivals


def _report(args: argparse.Namespace, arrivals: list[Arrival]) -> dict[str, tuple[float, float]]:
    """Prints the figures; returns (p50, p99) in ms per clock."""
    figures = {}
    clocks = [("kernel", "reached the socket (kernel timestamp)", 1), ("client", "read by the client", 2)]
    for name, title, clock in clocks if args.client == "raw" else clocks[1:]:
        by_event: dict[str, list[float]] = {}
        for arrival in arrivals:
            by_event.setdefault(arrival[0], []).append(arrival[clock])
        delays = sorted(at - min(ats) for ats in by_event.values() for at in ats)
        complete = [e for e, ats in by_event.items() if len(ats) == args.subscribers]
        q = lambda f: delays[min(len(delays) - 1, int(f * len(delays)))] * 1000  # noqa: B023, E731
        print(f"  {title}: events every subscriber got: {len(complete)} of {len(by_event)}")
        print(
            f"    delay after the first subscriber: p50={q(0.5):.1f} ms p99={q(0.99):.1f} ms"
            f" max={delays[-1] * 1000:.1f} ms mean={statistics.mean(delays) * 1000:.1f} ms"
        )
        spreads = ", ".join(f"{e} {(max(ats) - min(ats)) * 1000:.0f}" for e, ats in by_event.items())
        print(f"    first to last, per event (ms): {spreads}", flush=True)
        figures[name] = (q(0.5), q(0.99))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--client", choices=("raw", "aiohttp"), default="raw")
    parser.add_argument(
        "--baseline", metavar="DIR", type=Path,
        help="another version's source tree (e.g. mkdir /tmp/base && git archive main | tar -x -C"
        " /tmp/base), run alternately with this one for side-by-side figures and ratios",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1, help="with --baseline: runs of each")
    parser.add_argument(
        "--profile", metavar="PATH",
        help="record the API process with py-spy (pip install py-spy) while the events are"
        " delivered; collapsed stacks to PATH",
    )  # fmt: skip
    args = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it
    print(f"subscribers={args.subscribers} client_processes={args.clients} client={args.client}")
    versions = [("this", ROOT)] if args.baseline is None else [("baseline", args.baseline), ("this", ROOT)]
    results: dict[str, list[dict[str, tuple[float, float]]]] = {name: [] for name, _ in versions}
    for round_ in range(args.rounds if args.baseline else 1):
        for name, root in versions:
            print(f"{name} ({root}), round {round_ + 1}:", flush=True)
            results[name].append(_report(args, _measure(args, root)))
    if args.baseline is None:
        return
    print("side by side (medians over rounds):")
    for clock in results["this"][0]:
        med = {
            name: [statistics.median(r[clock][i] for r in runs) for i in (0, 1)]
            for name, runs in results.items()
        }
        base, this = med["baseline"], med["this"]
        print(
            f"  {clock}: baseline p50={base[0]:.1f} p99={base[1]:.1f} ms; this p50={this[0]:.1f}"
            f" p99={this[1]:.1f} ms; this/baseline p50 {this[0] / base[0]:.3f}, p99 {this[1] / base[1]:.3f}"
        )


if __name__ == "__main__":
    main()
