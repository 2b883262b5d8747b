"""`segstream`: the command line (contract section 2)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from typing import BinaryIO

from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from providers.batching import Target
from providers.reconcile import ReconcileResult
from streams.app import (
    UpOptions,
    discover_running,
    fill_generated_secrets,
    published_for_user,
    refuse_unreadable_profiles,
    run_system,
    stop_on_signals,
)
from streams.engine.processor import Processor
from streams.ops.logs import bind, configure_logging, register_settings_secrets
from streams.settings import Settings

console = Console(stderr=True, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        configure_logging("text", "INFO", console)
        console.print(f"[red]error:[/red] {exc}")
        return 2
    configure_logging(settings.log_format, "DEBUG" if args.verbose else settings.log_level,
                      console)
    register_settings_secrets(settings)
    bind(role=args.command)
    try:
        code: int = asyncio.run(args.handler(args, settings))
    except KeyboardInterrupt:
        code = 130
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        code = 2
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segstream", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(required=True, metavar="COMMAND", dest="command")

    up = sub.add_parser("up", help="the whole system on this machine (embedded services)")
    up.add_argument("--segments", metavar="FILE", help="JSON list of segment definitions")
    up.add_argument("--demo", action="store_true", help="demo segments and storefront traffic")
    up.add_argument("--demo-rate", type=int, default=200, help="demo events per second")
    up.set_defaults(handler=_up)

    process = sub.add_parser("process", help="the stream processor alone")
    process.add_argument("--segments", metavar="FILE", help="JSON list of segment definitions")
    process.set_defaults(handler=_process)

    api = sub.add_parser("api", help="the HTTP API alone")
    api.set_defaults(handler=_api)

    sync = sub.add_parser("sync", help="the provider-sync worker alone")
    sync.set_defaults(handler=_sync)

    produce = sub.add_parser("produce", help="validate and send JSON Lines events")
    produce.add_argument("file", help="JSON Lines file, or - for stdin")
    produce.set_defaults(handler=_produce)

    lag = sub.add_parser("lag", help="consumer lag per group, topic and partition")
    lag.add_argument("--json", action="store_true", help="JSON instead of a table")
    lag.add_argument("--watch", action="store_true",
                     help="refresh the table in place, with each partition's trend (Ctrl-C stops)")
    lag.add_argument("--interval", type=float, default=2.0, metavar="S",
                     help="--watch: seconds between refreshes (2)")
    lag.add_argument("--count", type=int, default=None, metavar="N",
                     help="--watch: stop after N refreshes")
    lag.set_defaults(handler=_lag)

    reconcile = sub.add_parser(
        "reconcile", help="make a segment's list, segment or tag at its provider hold exactly "
        "its members")
    reconcile.add_argument("profile", help="the auto-responder profile id")
    reconcile.add_argument("segment", help="the segment id (its auto_responder names the profile)")
    reconcile.add_argument("--dry-run", action="store_true", help="say what would change, only")
    reconcile.set_defaults(handler=_reconcile)

    schema = sub.add_parser("schema", help="print the JSON Schemas of events and records")
    schema.add_argument("name", nargs="?", help="one schema (default: all, by name)")
    schema.add_argument("--list", action="store_true", help="list the schema names")
    schema.set_defaults(handler=_schema)
    return parser


async def _up(args: argparse.Namespace, settings: Settings) -> int:
    settings = fill_generated_secrets(settings, console.print)
    register_settings_secrets(settings)  # the generated token and key too
    await refuse_unreadable_profiles(settings, "up")
    stop = asyncio.Event()
    stop_on_signals(stop)

    async def beside_the_roles(
        s: Settings, redis: Redis, processor: Processor, st: asyncio.Event,
        roles_stopped: asyncio.Event,
    ) -> None:
        """Published for `produce` and `lag` of any folder while it runs; the demo, if asked."""
        with published_for_user(s) as published:
            where = "from any folder" if published else "from this folder"
            console.print(f"`segstream produce` and `lag` find this run {where}; any other "
                          f"shell:\nexport SEGSTREAM_KAFKA_BOOTSTRAP={s.kafka_bootstrap}")
            if args.demo:
                from streams.local.demo import run_demo

                await run_demo(s, redis, processor, st, roles_stopped, console,
                               rate=args.demo_rate)
            else:
                await st.wait()

    options = UpOptions(segments_file=args.segments, demo=args.demo)
    await run_system(settings, options, console.print, beside_the_roles, stop)
    console.print("stopped cleanly")
    return 0


async def _process(args: argparse.Namespace, settings: Settings) -> int:
    return await _role(settings, "process", UpOptions(
        segments_file=args.segments, http=False, sync=False))


async def _api(args: argparse.Namespace, settings: Settings) -> int:
    return await _role(settings, "api", UpOptions(processor=False, sync=False))


async def _sync(args: argparse.Namespace, settings: Settings) -> int:
    return await _role(settings, "sync", UpOptions(http=False, processor=False))


async def _role(settings: Settings, role: str, options: UpOptions) -> int:
    """One role alone, for deployment: configured services and secrets, nothing generated."""
    _require_services(settings, role)
    missing = [name for name, value in (("SEGSTREAM_API_TOKEN", settings.api_token),
                                        ("SEGSTREAM_SECRET_KEY", settings.secret_key)) if not value]
    if missing:
        raise ValueError(f"`segstream {role}` refuses to start without {' and '.join(missing)} "
                         "(only `segstream up` generates them, for a local run)")
    await refuse_unreadable_profiles(settings, role)
    stop = asyncio.Event()
    stop_on_signals(stop)
    # A deployed role's startup lines are log records: in the configured format, redacted
    await run_system(settings, options, logging.getLogger("segstream").info, None, stop)
    return 0


def _require_services(settings: Settings, role: str) -> None:
    missing = [name for name, value in (("SEGSTREAM_KAFKA_BOOTSTRAP", settings.kafka_bootstrap),
                                        ("SEGSTREAM_REDIS_URL", settings.redis_url)) if not value]
    if missing:
        raise ValueError(
            f"`segstream {role}` runs against configured services: set {' and '.join(missing)} "
            "(or use `segstream up` for everything embedded)"
        )


async def _produce(args: argparse.Namespace, settings: Settings) -> int:
    from streams.broker.topics import TopicNames, ensure_topics
    from streams.ops.produce import produce_lines

    settings = _found(settings, "produce")
    kafka = settings.kafka_connection()
    topics = TopicNames(settings.topic_prefix)
    await ensure_topics(kafka, topics, settings.partitions, settings.replication_factor)
    with _open(args.file) as stream:
        report = await produce_lines(kafka, _lines(stream), topics,
                                     settings.kafka_idempotence)
    for number, reason in report.rejected:
        console.print(f"[red]line {number}[/red]: {reason}")
    sent = ", ".join(f"{n} to {t}" for t, n in sorted(report.sent.items())) or "nothing"
    console.print(f"sent {sent}; rejected {len(report.rejected)}")
    return 1 if report.rejected else 0


async def _lag(args: argparse.Namespace, settings: Settings) -> int:
    from streams.broker.topics import TopicNames
    from streams.ops.lag import consumer_lag, groups_and_topics

    settings = _found(settings, "lag")
    assert settings.kafka_bootstrap
    groups = groups_and_topics(TopicNames(settings.topic_prefix), settings.group_id)
    if args.watch:
        return await _lag_watch(args, settings, groups)
    rows = await consumer_lag(settings.kafka_connection(), groups)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0
    table = Table("group", "topic", "partition", "committed", "end", "lag")
    for r in rows:
        table.add_row(r.group, r.topic, str(r.partition),
                      "-" if r.committed is None else str(r.committed), str(r.end), str(r.lag))
    Console().print(table)
    return 0


async def _lag_watch(args: argparse.Namespace, settings: Settings,
                     groups: list[tuple[str, list[str]]]) -> int:
    from streams.ops.lag import LagReader
    from streams.ops.lag_watch import watch

    if args.interval <= 0:
        raise ValueError("--interval must be a positive number of seconds")
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with LagReader(settings.kafka_connection(), groups) as reader:
        await watch(reader, args.interval, Console(), stop, args.count)
    return 0


async def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """The reconcile of `POST /providers/profiles/{id}/reconcile`, from the command line:
    exit 0, or 1 when the provider refused a member or the call failed."""
    from providers.errors import ListNotFound
    from providers.profiles import ProfileError, provider_call
    from providers.reconcile import reconcile
    from streams.storage.client import redis_client
    from streams.storage.profiles import ProfileStore
    from streams.storage.state import StateStore

    settings = discover_running(settings)
    if not settings.redis_url or settings.secret_key is None:
        raise ValueError("`segstream reconcile` needs SEGSTREAM_SECRET_KEY (it decrypts the "
                         "profile's credentials) and SEGSTREAM_REDIS_URL (or `segstream up` "
                         "running on this machine)")
    async with redis_client(settings.redis_url, cluster=settings.redis_cluster) as redis:
        profiles = ProfileStore(redis, settings.key_prefix, settings.secret_key.get_secret_value())
        profile = await profiles.get(args.profile)
        slot, target = await _reconcile_target(settings, redis, profile.id, args.segment)
        members = await StateStore(redis, settings.key_prefix).segment_emails(
            await _partitions(settings), slot)
        credentials = await profiles.credentials_of(profile.id)
        async with profiles.open_client(profile, credentials) as client:
            try:
                result = await provider_call(
                    reconcile(client, target, members, dry_run=args.dry_run), "reconcile")
            except ListNotFound as exc:
                print(f"reconcile failed: the provider has no list {target.list_id!r} "
                      f"(the segment's auto_responder.list_id): {exc.reason}")
                return 1
            except ProfileError as exc:
                print(f"reconcile failed: {exc.message}")
                return 1
    _print_reconciled(result, args.dry_run)
    return 1 if result.failed else 0


async def _reconcile_target(
    settings: Settings, redis: Redis, profile_id: str, segment_id: str
) -> tuple[int, Target]:
    """The segment's slot and where it sends its members, which must be this profile."""
    from streams.storage.definitions import DefinitionStore

    definition = await DefinitionStore(redis, settings.key_prefix).get(segment_id)
    if definition is None:
        raise ValueError(f"no segment {segment_id!r}")
    responder = definition.auto_responder
    if not responder:
        raise ValueError(f"segment {segment_id!r} has no auto_responder")
    if str(responder.get("profile_id")) != profile_id:
        raise ValueError(f"segment {segment_id!r} syncs to another auto-responder profile "
                         f"({responder.get('profile_id')!r})")
    return definition.slot, Target.from_auto_responder(responder)


async def _partitions(settings: Settings) -> int:
    """The input topics' partition count (the processor's state is kept per partition),
    read from the broker when one is known, else SEGSTREAM_PARTITIONS."""
    from streams.broker.topics import TopicNames, partition_counts

    if not settings.kafka_bootstrap:
        return settings.partitions
    customers = TopicNames(settings.topic_prefix).customers
    counts = await partition_counts(settings.kafka_connection(), [customers])
    return counts.get(customers, settings.partitions)


def _print_reconciled(result: ReconcileResult, dry_run: bool) -> None:
    verb = ("would add", "would remove") if dry_run else ("added", "removed")
    print(f"{verb[0]} {_few(result.added)}")
    print(f"{verb[1]} {_few(result.removed)}")
    print(f"failed {len(result.failed)}")
    for email, reason in sorted(result.failed.items()):
        print(f"  {email}: {reason}")
    print(f"members without email {_few(result.without_email)}")


def _few(items: list[str], shown: int = 5) -> str:
    """`3: a, b, c`, or the first `shown` and how many more."""
    more = f", and {len(items) - shown} more" if len(items) > shown else ""
    return f"{len(items)}" + (f": {', '.join(items[:shown])}{more}" if items else "")


async def _schema(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from streams.schemas import SCHEMA_NAMES, all_schemas, load_schema

    if args.list:
        text = "\n".join(SCHEMA_NAMES)
    elif args.name is None:
        text = json.dumps(all_schemas(), indent=2, ensure_ascii=False)
    elif args.name in SCHEMA_NAMES:
        text = json.dumps(load_schema(args.name), indent=2, ensure_ascii=False)
    else:
        raise ValueError(f"no schema named {args.name!r}; `segstream schema --list` names them")
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `segstream schema | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _found(settings: Settings, command: str) -> Settings:
    found = discover_running(settings)
    if not found.kafka_bootstrap:
        raise ValueError(
            f"`segstream {command}` needs a broker: set SEGSTREAM_KAFKA_BOOTSTRAP, or start "
            "`segstream up` on this machine first"
        )
    return found


class _open:
    """A binary stream for a path, or stdin for `-`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.stream: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        if self.path == "-":
            return sys.stdin.buffer
        self.stream = open(self.path, "rb")
        return self.stream

    def __exit__(self, *exc: object) -> None:
        if self.stream is not None:
            self.stream.close()


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    yield from stream


if __name__ == "__main__":
    sys.exit(main())
