"""Bearer-token check for every route but health and metrics, in constant time."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from streams.api.deps import Deps
from streams.api.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="SEGSTREAM_API_TOKEN")


async def require_token(
    deps: Deps, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    token = deps.settings.api_token
    if token is None:  # no token configured means nothing gets in, not everything
        raise ApiError(401, "unauthorized", "the API has no token configured")
    if credentials is None:
        raise ApiError(401, "unauthorized", "missing bearer token (Authorization: Bearer …)")
    given = credentials.credentials.encode()
    if not hmac.compare_digest(given, token.get_secret_value().encode()):
        raise ApiError(401, "unauthorized", "invalid bearer token")
