"""HTTP routes for auto-responder profiles (contract section 6), as a FastAPI router.

The API app mounts it and adds authentication; nothing here checks tokens. Answers
never carry credentials, only the masked ``hint``. Errors have the contract's shape
``{"error": {"code", "message", "details"}}``.

    POST /providers/profiles                 create (201); credentials checked with the provider
    GET  /providers/profiles                 every profile
    GET  /providers/profiles/{id}            one profile
    POST /providers/profiles/{id}/sync       fetch lists and segments or tags from the provider
    GET  /providers/profiles/{id}/lists      what the last sync fetched: {"lists", "synced_at"}
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from providers.limits import ProviderLimits
from providers.profiles import ProfileError, ProfileStore


class ProfileIn(BaseModel):
    """The body of ``POST /providers/profiles`` (documentation; parsed by hand)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    provider: str
    credentials: dict[str, str]
    base_url: str | None = None


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


def providers_router(store: ProfileStore, limits: ProviderLimits | None = None) -> APIRouter:
    """The ``/providers/profiles`` routes over ``store``; ``limits`` shared with the workers."""
    router = APIRouter(prefix="/providers/profiles", tags=["providers"])
    errors: dict[int | str, dict[str, Any]] = {
        404: _ERROR, 422: _ERROR, 502: _ERROR, 400: _ERROR,
    }

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

    return router
