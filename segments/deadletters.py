"""The dead-letter record contract: what `segments.dlq` carries beside the original bytes.

A dead letter keeps the record's key and value unchanged; its headers say where it came from and
why it could not be processed, in Kafka Connect's `__connect.errors.*` convention (so Connect's
tooling reads them), plus segstream's own short `segstream.error.code` and the stage that gave up
(`processor` or `sync`).
"""

from __future__ import annotations

Headers = list[tuple[str, bytes]]


def dlq_headers(
    topic: str, partition: int, offset: int, code: str, reason: str, stage: str = "processor"
) -> Headers:
    """The headers of one dead letter read from `topic[partition]@offset`."""
    return [
        ("__connect.errors.topic", topic.encode()),
        ("__connect.errors.partition", str(partition).encode()),
        ("__connect.errors.offset", str(offset).encode()),
        ("__connect.errors.exception.class.name", code.encode()),
        ("__connect.errors.exception.message", reason.encode()),
        ("segstream.error.code", code.encode()),
        ("segstream.error.stage", stage.encode()),
    ]
