"""Consumer lag per group, topic and partition: `segstream lag` and the `/metrics` gauges.

The end of each partition is read from a fetch's high watermark (right on Apache Kafka and on the
embedded broker, whose ListOffsets answer is wrong after batched produces); committed offsets with
`consumer.committed()` under the group id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from aiokafka import TopicPartition

from streams.broker.topics import TopicNames, committed_offsets, high_watermarks, partition_counts


@dataclass(frozen=True)
class LagRow:
    """Lag of one consumer group on one partition."""

    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def groups_and_topics(topics: TopicNames, processor_group: str) -> list[tuple[str, list[str]]]:
    """The consumer groups segstream runs and the topics each reads."""
    return [
        (processor_group, [topics.customers, topics.orders, topics.repartition]),
        (f"{processor_group}-sync", [topics.membership]),
    ]


async def consumer_lag(
    bootstrap: str, groups: Sequence[tuple[str, Iterable[str]]]
) -> list[LagRow]:
    all_topics = sorted({t for _, ts in groups for t in ts})
    counts = await partition_counts(bootstrap, all_topics)
    tps = [TopicPartition(t, p) for t in all_topics for p in range(counts.get(t, 0))]
    ends = await high_watermarks(bootstrap, tps)
    rows: list[LagRow] = []
    for group, group_topics in groups:
        mine = [tp for tp in tps if tp.topic in set(group_topics)]
        committed = await committed_offsets(bootstrap, group, mine)
        for tp in mine:
            done = committed.get(tp)
            end = ends.get(tp, 0)
            rows.append(LagRow(group, tp.topic, tp.partition, done, end, end - (done or 0)))
    return rows


def prometheus_lag(rows: Iterable[LagRow]) -> str:
    lines = [
        "# HELP segstream_consumer_lag Records not yet consumed, per group and partition.",
        "# TYPE segstream_consumer_lag gauge",
    ]
    for r in rows:
        labels = f'group="{r.group}",topic="{r.topic}",partition="{r.partition}"'
        lines.append(f"segstream_consumer_lag{{{labels}}} {r.lag}")
    return "\n".join(lines) + "\n"
