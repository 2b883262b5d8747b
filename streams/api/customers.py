"""`GET /customers/{customer_id}`: a customer's features, segments, why in or out of each, and
when time alone will next re-evaluate them (`next_evaluation`)."""

from __future__ import annotations

from typing import Any

from segments.definitions import SegmentDefinition
from segments.evaluator import SegmentIndex
from segments.features import (
    FeatureState,
    decode_state,
    feature_view,
    mask_slots,
    ms_to_rfc3339,
)
from streams.api.body import api_router
from streams.api.deps import Deps
from streams.api.errors import ApiError, error_responses
from streams.broker.partitioning import owner_partition

router = api_router()


@router.get("/customers/{customer_id}", tags=["customers"],
            summary="Features, segments, and per-condition results of every live segment",
            responses=error_responses(404))
async def get_customer(deps: Deps, customer_id: str) -> dict[str, Any]:
    partition = owner_partition(customer_id, deps.partitions)
    blob = await deps.states.load_state(partition, customer_id)
    if blob is None:
        raise ApiError(404, "customer_not_found", f"no stored state for customer {customer_id!r}")
    state = decode_state(blob)
    definitions, index = await deps.current()
    now = deps.clock()
    slot_ids = {d.slot: d.id for d in definitions.live.values()}
    features = feature_view(state, now, slot_ids)
    segments = sorted(slot_ids[s] for s in mask_slots(state.segments_mask) if s in slot_ids)
    features["segments"] = segments  # feature_view lists slots when no segment is live
    explained = {d.id: _explain(index, state, now, d)
                 for d in sorted(definitions.live.values(), key=lambda d: d.id)}
    scheduled = await deps.states.timer_of(partition, customer_id)
    return {"customer_id": customer_id, "features": features, "segments": segments,
            "explain": explained, "next_evaluation": _next_evaluation(index, state, now, scheduled)}


def _next_evaluation(
    index: SegmentIndex, state: FeatureState, now_ms: int, scheduled: int | None
) -> dict[str, Any] | None:
    """When the engine re-evaluates the customer with no event (its stored timer; None: never
    until an event), and the conditions whose operand changes first, with that instant."""
    changes = index.time_changes(state, now_ms)
    if scheduled is None and not changes:
        return None
    first = changes[0].at_ms if changes else None
    conditions = [
        {"segment_id": change.segment_id, "path": change.path, "field": change.condition.field,
         "op": change.condition.op,
         "value": _raw_value(index.by_id[change.segment_id], *_indices(change.path)),
         "within_days": change.condition.within_days, "changes_at": ms_to_rfc3339(change.at_ms)}
        for change in changes if change.at_ms == first
    ]
    return {"at": ms_to_rfc3339(scheduled) if scheduled is not None else None,
            "scheduled": scheduled is not None, "conditions": conditions}


def _indices(path: str) -> tuple[int, int]:
    """(group, condition) of `groups[g].conditions[c]`."""
    group, condition = path.split(".")
    return int(group[7:-1]), int(condition[11:-1])


def _explain(
    index: SegmentIndex, state: FeatureState, now_ms: int, definition: SegmentDefinition
) -> dict[str, Any]:
    """Stored membership, what evaluating now gives, and each condition's result with its path."""
    results = index.explain(state, now_ms, definition.id)
    bit = 1 << definition.slot
    groups = []
    for g, (group, outcome) in enumerate(zip(definition.groups, results, strict=True)):
        conditions = [
            {"path": f"groups[{g}].conditions[{c}]", "field": cond.field, "op": cond.op,
             "value": _raw_value(definition, g, c), "result": result}
            for c, (cond, result) in enumerate(zip(group, outcome, strict=True))
        ]
        groups.append({"path": f"groups[{g}]", "result": all(outcome), "conditions": conditions})
    return {"member": bool(state.segments_mask & bit),
            "matches_now": bool(index.evaluate_all(state, now_ms) & bit),
            "version": definition.version, "groups": groups}


def _raw_value(definition: SegmentDefinition, g: int, c: int) -> Any:
    """The condition's value as it was written (the parsed one is normalized)."""
    try:
        return definition.raw["groups"][g]["conditions"][c].get("value")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
