"""Run a fake provider on a loopback port: in-process for tests and the demo, or alone.

In-process::

    fake = MailchimpFake()
    async with serve_fake(fake) as base_url:   # http://127.0.0.1:<port>/3.0
        client = make_client("mailchimp", fake.credentials(), base_url)

Standalone (once listening, prints one JSON line with base_url, credentials and the
seeded list and segment ids; serves until Ctrl-C)::

    python -m providers.fakes.server mailchimp --port 8999 --list "Demo" --segment "VIP"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import orjson
import uvicorn
from starlette.types import ASGIApp

from providers.fakes.activecampaign import ActiveCampaignFake
from providers.fakes.base import FakeProvider, Faults, InjectedDrop
from providers.fakes.mailchimp import MailchimpFake
from providers.fakes.sendlane import SendlaneFake

FAKES: dict[str, type[FakeProvider]] = {
    "mailchimp": MailchimpFake,
    "activecampaign": ActiveCampaignFake,
    "sendlane": SendlaneFake,
}


class _DropFilter(logging.Filter):
    """Hide uvicorn's traceback for connections a fake cuts on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], InjectedDrop))


class _InProcessServer(uvicorn.Server):
    """A uvicorn server that leaves the host's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _quiet_injected_drops() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropFilter) for f in logger.filters):
        logger.addFilter(_DropFilter())


def _config(app: ASGIApp, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app, lifespan="off", http="h11", loop="none", log_level=log_level,
        access_log=False, timeout_graceful_shutdown=2,
    )


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    """Wait until uvicorn listens (True) or its task ends first (False)."""
    while True:
        if server.started:
            return True
        if task.done():
            return False
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def serve_fake(
    app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
) -> AsyncIterator[str]:
    """Serve ``app`` on ``host:port`` (0: a free port); yield its API base URL."""
    _quiet_injected_drops()
    sock = _bind(host, port)
    server = _InProcessServer(_config(app, log_level))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        if not await _started(server, task):
            task.result()  # re-raise why it could not start
            raise RuntimeError("fake server stopped during startup")
        bound_port = sock.getsockname()[1]
        yield f"http://{host}:{bound_port}{getattr(app, 'api_prefix', '')}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def build_fake(provider: str, faults: Faults | None = None, **options: Any) -> FakeProvider:
    """A fake for ``provider`` (``mailchimp``, ``activecampaign``, ``sendlane``)."""
    if provider not in FAKES:
        raise ValueError(f"unknown provider {provider!r}; expected one of {', '.join(FAKES)}")
    return FAKES[provider](faults, **options)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run a fake auto-responder API locally.")
    parser.add_argument("provider", choices=sorted(FAKES))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--list", action="append", dest="lists", default=None,
                        help="seed a list (repeatable; default: 'Demo list')")
    parser.add_argument("--segment", action="append", dest="segments", default=[],
                        help="seed a static segment or tag in every list (repeatable)")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--rate-429", type=float, default=0.0)
    parser.add_argument("--rate-5xx", type=float, default=0.0)
    parser.add_argument("--drop-rate", type=float, default=0.0)
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> None:
    faults = Faults(rate_429=args.rate_429, rate_5xx=args.rate_5xx, latency=args.latency,
                    drop_rate=args.drop_rate)
    fake = build_fake(args.provider, faults)
    lists = [fake.seed_list(name, args.segments) for name in args.lists or ["Demo list"]]
    _quiet_injected_drops()
    sock = _bind(args.host, args.port)
    server = uvicorn.Server(_config(fake, "info"))  # handles Ctrl-C itself
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        if await _started(server, task):
            port = sock.getsockname()[1]
            info = {"provider": args.provider,
                    "base_url": f"http://{args.host}:{port}{fake.api_prefix}",
                    "credentials": fake.credentials(),
                    "lists": [{"id": lid, "segments": segs} for lid, segs in lists]}
            sys.stdout.write(orjson.dumps(info).decode() + "\n")
            sys.stdout.flush()
        await task
    finally:
        sock.close()


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry: run one fake until interrupted (exit status 0 on Ctrl-C)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(_parse_args(argv)))


if __name__ == "__main__":
    main()
