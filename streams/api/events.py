"""`POST /events`: HTTP ingestion for producers without Kafka.

Every event is validated by `decode_event`, the decoder the processor uses; one invalid event
rejects the whole request (400, per-event errors) and nothing is sent. Otherwise each goes to
its topic keyed by `customer_id`, and the answer (202) waits for the broker's acknowledgement.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import Body

from segments.events import TOPIC_OF_TYPE, InvalidEvent, decode_event, event_type
from streams.api.body import api_router
from streams.api.deps import Deps
from streams.api.errors import ApiError, error_responses
from streams.api.models import MAX_EVENTS, Events

router = api_router()


@router.post("/events", status_code=202, tags=["events"], summary="Send events to their topics",
             responses=error_responses(400, 413, 415))
async def post_events(deps: Deps, body: Annotated[Events, Body()]) -> dict[str, Any]:
    items = body if isinstance(body, list) else [body]
    if not items:
        raise ApiError(400, "no_events", "the list holds no events")
    if len(items) > MAX_EVENTS:
        raise ApiError(413, "too_many_events", f"at most {MAX_EVENTS} events per request")
    encoded, decoded, errors = _validate(items)
    if errors:
        raise ApiError(400, "invalid_events",
                       f"{len(errors)} of {len(items)} events are invalid; none was sent", errors)
    topics = deps.topics
    sends = []
    for raw, event in zip(encoded, decoded, strict=True):
        topic = getattr(topics, TOPIC_OF_TYPE[event_type(event)])
        sends.append(await deps.producer.send(topic, raw, key=event.customer_id.encode()))
    await asyncio.gather(*sends)
    return {"accepted": len(items)}


def _validate(items: list[Any]) -> tuple[list[bytes], list[Any], list[dict[str, Any]]]:
    """Each item as JSON bytes and decoded, or the problems with it, by index."""
    encoded, decoded, errors = [], [], []
    for n, item in enumerate(items):
        try:
            raw = orjson.dumps(item)
            decoded.append(decode_event(raw))
            encoded.append(raw)
        except orjson.JSONEncodeError:  # orjson reads 1024 levels of nesting, writes 254
            errors.append({"index": n, "code": "invalid_json",
                           "reason": "not valid JSON: nested too deeply", "path": "$"})
        except InvalidEvent as exc:
            errors.append({"index": n, "code": exc.code, "reason": exc.reason, "path": exc.path})
    return encoded, decoded, errors
