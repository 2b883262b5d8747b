"""HTTP routes for auto-responder profiles (contract section 6), as a FastAPI router.

The API app mounts it and adds authentication; nothing here checks tokens. Answers
never carry credentials, only the masked ``hint``. Errors have the contract's shape
``{"error": {"code", "message", "details"}}``.

    POST /providers/profiles                 create (201); credentials checked with the provider
    GET  /providers/profiles                 every profile
    GET  /providers/profiles/{id}            one profile
    POST /providers/profiles/{id}/sync       fetch lists and segments or tags from the provider
    GET  /providers/profiles/{id}/lists      what the last sync fetched: {"lists", "synced_at"}
    POST /providers/profiles/{id}/reconcile  make the segment's list, segment or tag hold
                                             exactly its members: {"segment_id", "dry_run"}

Reconcile needs the processor's state: ``redis``, ``key_prefix`` and ``partitions``
(and ``definitions``, else a ``DefinitionStore`` over the same Redis); without them
the route answers 503.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from providers.batching import Target
from providers.errors import AuthError, ListNotFound, ProviderError
from providers.limits import ProviderLimits
from providers.profiles import ProfileError
from providers.reconcile import reconcile
from streams.storage.definitions import DefinitionStore
from streams.storage.profiles import ProfileStore
from streams.storage.state import StateStore


class ProfileIn(BaseModel):
    """The body of ``POST /providers/profiles`` (documentation; parsed by hand)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    provider: str
    credentials: dict[str, str]
    base_url: str | None = None


class ReconcileIn(BaseModel):
    """The body of ``POST /providers/profiles/{id}/reconcile`` (documentation)."""

    model_config = ConfigDict(extra="forbid")

    segment_id: str
    dry_run: bool = False


_ERROR = {"description": "error", "content": {"application/json": {"schema": {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message", "details"]}},
}}}}


def error_response(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    """The contract's error body with ``status``."""
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return JSONResponse(body, status_code=status)


def _from(error: ProfileError) -> JSONResponse:
    return JSONResponse(error.to_body(), status_code=error.status)


def providers_router(
    store: ProfileStore,
    limits: ProviderLimits | None = None,
    definitions: DefinitionStore | None = None,
    redis: Redis | None = None,
    key_prefix: str | None = None,
    partitions: int | None = None,
) -> APIRouter:
    """The ``/providers/profiles`` routes over ``store``; ``limits`` shared with the workers.

    ``redis``, ``key_prefix`` and ``partitions`` (the processor's state) enable reconcile;
    ``definitions`` defaults to ``DefinitionStore(redis, key_prefix)``.
    """
    router = APIRouter(prefix="/providers/profiles", tags=["providers"])
    errors: dict[int | str, dict[str, Any]] = {
        404: _ERROR, 422: _ERROR, 502: _ERROR, 400: _ERROR,
    }
    if definitions is None and redis is not None and key_prefix is not None:
        definitions = DefinitionStore(redis, key_prefix)

    @router.post("", status_code=201, responses=errors, openapi_extra={"requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ProfileIn.model_json_schema()}},
    }})
    async def create_profile(request: Request) -> JSONResponse:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return error_response(400, "invalid_json", f"the body is not JSON: {exc}")
        if not isinstance(body, dict):
            return error_response(422, "invalid_profile", "the body must be a JSON object")
        unknown = sorted(set(body) - set(ProfileIn.model_fields))
        if unknown:
            return error_response(422, "invalid_profile", "unknown fields",
                                  [{"path": k, "message": "unknown field"} for k in unknown])
        try:
            profile = await store.create(
                body.get("name"), body.get("provider"), body.get("credentials"),
                body.get("base_url"), limits=limits,
            )
        except ProfileError as error:
            return _from(error)
        return JSONResponse(profile.to_public(), status_code=201)

    @router.get("", responses=errors)
    async def list_profiles() -> JSONResponse:
        profiles = await store.list()
        return JSONResponse({"profiles": [p.to_public() for p in profiles]})

    @router.get("/{profile_id}", responses=errors)
    async def get_profile(profile_id: str) -> JSONResponse:
        try:
            return JSONResponse((await store.get(profile_id)).to_public())
        except ProfileError as error:
            return _from(error)

    @router.post("/{profile_id}/sync", responses=errors)
    async def sync_profile(profile_id: str) -> JSONResponse:
        try:
            profile = await store.sync_lists(profile_id, limits=limits)
        except ProfileError as error:
            return _from(error)
        return JSONResponse(profile.lists_view())

    @router.get("/{profile_id}/lists", responses=errors)
    async def profile_lists(profile_id: str) -> JSONResponse:
        try:
            return JSONResponse((await store.get(profile_id)).lists_view())
        except ProfileError as error:
            return _from(error)

    @router.post("/{profile_id}/reconcile", responses={**errors, 503: _ERROR},
                 openapi_extra={"requestBody": {
                     "required": True,
                     "content": {"application/json": {"schema": ReconcileIn.model_json_schema()}},
                 }})
    async def reconcile_profile(profile_id: str, request: Request) -> JSONResponse:
        if definitions is None or redis is None or key_prefix is None or not partitions:
            return error_response(503, "reconcile_unavailable",
                                  "reconcile is not configured on this API (no segment state)")
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return error_response(400, "invalid_json", f"the body is not JSON: {exc}")
        problems = _reconcile_problems(body)
        if problems:
            return error_response(422, "invalid_reconcile", "the body is not valid", problems)
        segment_id, dry_run = body["segment_id"], bool(body.get("dry_run", False))
        try:
            profile = await store.get(profile_id)
        except ProfileError as error:
            return _from(error)
        definition = await definitions.get(segment_id)
        if definition is None:
            return error_response(404, "segment_not_found", f"no segment {segment_id!r}",
                                  [{"path": "segment_id", "message": "unknown segment"}])
        responder = definition.auto_responder
        if not responder:
            return error_response(422, "no_auto_responder",
                                  f"segment {segment_id!r} has no auto_responder",
                                  [{"path": "segment_id", "message": "no auto_responder"}])
        if str(responder.get("profile_id")) != profile.id:
            return error_response(
                422, "other_profile",
                f"segment {segment_id!r} syncs to another auto-responder profile",
                [{"path": "segment_id",
                  "message": f"its auto_responder names profile {responder.get('profile_id')!r}"}])
        target = Target.from_auto_responder(responder)
        try:
            credentials = await store.credentials_of(profile.id)
            states = StateStore(redis, key_prefix)
            members = await states.segment_emails(partitions, definition.slot)
            async with store.open_client(profile, credentials, limits=limits) as client:
                result = await reconcile(client, target, members, dry_run=dry_run)
        except ProfileError as error:
            return _from(error)
        except AuthError as exc:
            return error_response(422, "credentials_rejected",
                                  f"the provider refused the credentials: {exc.reason}",
                                  [{"path": "credentials", "message": exc.reason}])
        except ListNotFound as exc:
            return error_response(422, "list_not_found",
                                  f"the provider has no list {target.list_id!r}: {exc.reason}",
                                  [{"path": "auto_responder.list_id", "message": exc.reason}])
        except ProviderError as exc:
            return error_response(502, "provider_unavailable", f"could not reconcile: {exc}",
                                  [{"path": "provider", "message": exc.reason}])
        return JSONResponse({
            "added": result.added, "removed": result.removed, "failed": result.failed,
            "without_email": len(result.without_email), "dry_run": dry_run,
        })

    return router


def _reconcile_problems(body: Any) -> list[dict[str, str]]:
    """What is wrong with a reconcile body (empty: valid)."""
    if not isinstance(body, dict):
        return [{"path": "", "message": "the body must be a JSON object"}]
    problems = [{"path": k, "message": "unknown field"}
                for k in sorted(set(body) - set(ReconcileIn.model_fields))]
    if not isinstance(body.get("segment_id"), str) or not body["segment_id"]:
        problems.append({"path": "segment_id", "message": "a segment id is required"})
    if not isinstance(body.get("dry_run", False), bool):
        problems.append({"path": "dry_run", "message": "true or false"})
    return problems
