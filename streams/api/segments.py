"""Routes for segment definitions (contract sections 5 and 6): CRUD, members, preview, fields.

Definitions are written to the `DefinitionStore`; processors notice the new revision, backfill
their partitions and record the fingerprint they reached, from which `status` and `progress`
are read. Membership counts and pages come from the per-partition counts and membership masks.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Final

from fastapi import Query

from segments.catalog import FIELD_CATALOG
from segments.definitions import DefinitionError, SegmentDefinition, check_graph, parse_definition
from segments.evaluator import SegmentIndex
from segments.features import ms_to_rfc3339
from streams.api.body import api_router
from streams.api.deps import ApiDeps, Deps
from streams.api.errors import ApiError, error_responses
from streams.api.models import SEGMENT_ID_PATTERN, SegmentIn
from streams.api.queries import MemberCursor, member_page, preview, progress
from streams.storage.definitions import SegmentExists, SegmentNotFound

router = api_router()

PREVIEW_ID: Final = "__preview__"  # cannot clash: segment ids start with a letter or digit
_VALID_ID: Final = re.compile(SEGMENT_ID_PATTERN)
_BODY_ERRORS: Final = error_responses(400, 413, 415)


@router.get("/fields", tags=["segments"], summary="The condition catalog")
async def list_fields() -> dict[str, Any]:
    return {"fields": FIELD_CATALOG}


@router.post("/segments", status_code=201, tags=["segments"], summary="Create a segment",
             responses={**_BODY_ERRORS, **error_responses(409)})
async def create_segment(deps: Deps, body: SegmentIn) -> dict[str, Any]:
    segment_id = body.id or _generated_id(body.name)
    definition = body.definition()
    await _check_auto_responder(deps, definition)
    try:
        created = await deps.definitions.create(segment_id, definition)
    except SegmentExists:
        raise ApiError(409, "segment_exists", f"segment {segment_id!r} exists; PUT replaces it",
                       [{"path": "id", "message": "already used by another segment"}]) from None
    except DefinitionError as exc:
        raise _invalid(exc) from None
    return await _segment_json(deps, created)


@router.get("/segments", tags=["segments"], summary="Every segment, with member counts")
async def list_segments(deps: Deps) -> dict[str, Any]:
    live = sorted((await deps.definitions.load()).live.values(), key=lambda d: d.id)
    counts = await deps.states.member_counts(deps.partitions, [d.id for d in live])
    backfilled = await deps.states.backfilled(deps.partitions)
    segments = []
    for d in live:
        done = sum(1 for r in backfilled if f"{d.id}@{d.version}" in r) / deps.partitions
        segments.append(_render(d, counts[d.id], done))
    return {"segments": segments}


@router.post("/segments/preview", tags=["segments"], responses=_BODY_ERRORS,
             summary="Count the stored customers a definition would match (`id` is ignored)")
async def preview_segment(
    deps: Deps, body: SegmentIn, sample: Annotated[int, Query(ge=0, le=100)] = 10,
) -> dict[str, Any]:
    definitions, _ = await deps.current()
    free_slot = max((d.slot for d in definitions.live.values()), default=-1) + 1
    try:
        candidate = parse_definition(body.definition(), segment_id=PREVIEW_ID, version=0,
                                     slot=free_slot)
        check_graph({**definitions.live, PREVIEW_ID: candidate})
    except DefinitionError as exc:
        raise _invalid(exc) from None
    index = SegmentIndex([*definitions.live.values(), candidate])
    result = await preview(deps.states, deps.partitions, index, PREVIEW_ID, deps.clock(), sample)
    return result.as_json()


@router.get("/segments/{segment_id}", tags=["segments"], summary="One segment",
            responses=error_responses(404))
async def get_segment(deps: Deps, segment_id: str) -> dict[str, Any]:
    return await _segment_json(deps, await _existing(deps, segment_id))


@router.put("/segments/{segment_id}", tags=["segments"], summary="Replace a segment's definition",
            responses={**_BODY_ERRORS, **error_responses(404)})
async def replace_segment(deps: Deps, segment_id: str, body: SegmentIn) -> dict[str, Any]:
    if body.id is not None and body.id != segment_id:
        raise ApiError(422, "invalid_definition", "the body's id differs from the path's",
                       [{"path": "id", "message": f"must be {segment_id!r} or left out"}])
    if not _VALID_ID.match(segment_id):
        raise _not_found(segment_id)
    definition = body.definition()
    await _check_auto_responder(deps, definition)
    try:
        replaced = await deps.definitions.replace(segment_id, definition)
    except SegmentNotFound:
        raise _not_found(segment_id) from None
    except DefinitionError as exc:
        raise _invalid(exc) from None
    return await _segment_json(deps, replaced)


@router.delete("/segments/{segment_id}", tags=["segments"], summary="Delete a segment",
               responses=error_responses(404, 409))
async def delete_segment(deps: Deps, segment_id: str) -> dict[str, Any]:
    try:
        deleted = await deps.definitions.delete(segment_id)
    except DefinitionError as exc:
        raise ApiError(409, "segment_in_use", "other segments build on this one; change them "
                       "first", exc.details) from None
    if deleted is None:
        raise _not_found(segment_id)
    return {"id": deleted.id, "version": deleted.version, "name": deleted.name, "deleted": True}


@router.get("/segments/{segment_id}/members", tags=["segments"], summary="Member ids, paged",
            responses=error_responses(400, 404))
async def segment_members(
    deps: Deps, segment_id: str,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    definition = await _existing(deps, segment_id)
    ids, after = await member_page(deps.states, deps.partitions, definition.slot,
                                   MemberCursor.decode(cursor), limit)
    return {"segment_id": segment_id, "members": ids,
            "next_cursor": after.encode() if after else None}


async def _existing(deps: ApiDeps, segment_id: str) -> SegmentDefinition:
    found = await deps.definitions.get(segment_id) if _VALID_ID.match(segment_id) else None
    if found is None:
        raise _not_found(segment_id)
    return found


async def _segment_json(deps: ApiDeps, d: SegmentDefinition) -> dict[str, Any]:
    count = await deps.states.member_count(deps.partitions, d.id)
    return _render(d, count, await progress(deps.states, deps.partitions, d))


def _render(d: SegmentDefinition, member_count: int, done: float) -> dict[str, Any]:
    return {
        "id": d.id, "version": d.version, "name": d.name, "groups": d.raw.get("groups"),
        "auto_responder": d.raw.get("auto_responder"), "member_count": member_count,
        "status": "live" if done >= 1.0 else "backfilling", "progress": round(done, 4),
        "updated_at": ms_to_rfc3339(d.updated_ms) if d.updated_ms is not None else None,
    }


def _generated_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
    suffix = uuid.uuid4().hex[:8]
    return f"{slug}-{suffix}" if slug else f"segment-{suffix}"


async def _check_auto_responder(deps: ApiDeps, definition: dict[str, Any]) -> None:
    """The list (and segment or tag) a segment sends to must be one the last sync saw."""
    target = definition.get("auto_responder")
    if target is None:
        return
    try:  # the definition's own problems first, with their paths
        parse_definition(definition, segment_id="check", version=1, slot=0)
    except DefinitionError as exc:
        raise _invalid(exc) from None
    problems = await deps.profiles.target_problems(target)
    if problems:
        raise ApiError(422, "unknown_auto_responder_target", "the auto_responder names a "
                       "profile, list or segment the provider sync has not seen", problems)


def _invalid(exc: DefinitionError) -> ApiError:
    return ApiError(422, "invalid_definition", "the segment definition breaks a rule; details "
                    "name each problem by path", exc.details)


def _not_found(segment_id: str) -> ApiError:
    return ApiError(404, "segment_not_found", f"no segment {segment_id!r}")
