"""Routes for auto-responder profiles (contract section 6).

    POST /providers/profiles                 create (201); credentials checked with the provider
    GET  /providers/profiles                 every profile
    GET  /providers/profiles/{id}            one profile
    POST /providers/profiles/{id}/sync       fetch lists and segments or tags from the provider
    GET  /providers/profiles/{id}/lists      what the last sync fetched: {"lists", "synced_at"}
    POST /providers/profiles/{id}/reconcile  make the segment's list, segment or tag hold
                                             exactly its members

Answers never carry credentials, only the masked `hint`. The profile store's `ProfileError`s
(unknown profile, refused credentials, a provider down) are rendered by the API's error
handlers.
"""

from __future__ import annotations

from typing import Any

from providers.base import ProviderClient
from providers.batching import Target
from providers.errors import ListNotFound
from providers.profiles import Profile, provider_call
from providers.reconcile import ReconcileResult, SegmentEmails, reconcile
from segments.definitions import SegmentDefinition
from streams.api.body import api_router
from streams.api.deps import ApiDeps, Deps
from streams.api.errors import ApiError, error_responses
from streams.api.models import ProfileIn, ReconcileIn

router = api_router(prefix="/providers/profiles", tags=["providers"])


@router.post("", status_code=201, summary="Create an auto-responder profile",
             responses=error_responses(400, 413, 415, 502))
async def create_profile(deps: Deps, body: ProfileIn) -> dict[str, Any]:
    profile = await deps.profiles.create(body.name, body.provider, body.credentials,
                                         body.base_url)
    return profile.to_public()


@router.get("", summary="Every profile")
async def list_profiles(deps: Deps) -> dict[str, Any]:
    return {"profiles": [p.to_public() for p in await deps.profiles.list()]}


@router.get("/{profile_id}", summary="One profile", responses=error_responses(404))
async def get_profile(deps: Deps, profile_id: str) -> dict[str, Any]:
    return (await deps.profiles.get(profile_id)).to_public()


@router.post("/{profile_id}/sync", responses=error_responses(404, 502),
             summary="Fetch the provider's lists and their segments or tags")
async def sync_profile(deps: Deps, profile_id: str) -> dict[str, Any]:
    return (await deps.profiles.sync_lists(profile_id)).lists_view()


@router.get("/{profile_id}/lists", summary="What the last sync fetched",
            responses=error_responses(404))
async def profile_lists(deps: Deps, profile_id: str) -> dict[str, Any]:
    return (await deps.profiles.get(profile_id)).lists_view()


@router.post("/{profile_id}/reconcile",
             summary="Make the segment's list, segment or tag hold exactly its members",
             responses=error_responses(400, 404, 413, 415, 502))
async def reconcile_profile(deps: Deps, profile_id: str, body: ReconcileIn) -> dict[str, Any]:
    profile = await deps.profiles.get(profile_id)
    definition, target = await _segment_of(deps, profile, body.segment_id)
    credentials = await deps.profiles.credentials_of(profile.id)
    members = await deps.states.segment_emails(deps.partitions, definition.slot)
    async with deps.profiles.open_client(profile, credentials) as client:
        result = await provider_call(
            _reconcile(client, target, members, body.dry_run), "reconcile")
    return {"added": result.added, "removed": result.removed, "failed": result.failed,
            "without_email": len(result.without_email), "dry_run": body.dry_run}


async def _segment_of(
    deps: ApiDeps, profile: Profile, segment_id: str
) -> tuple[SegmentDefinition, Target]:
    """The segment and where it sends its members, which must be this profile."""
    definition = await deps.definitions.get(segment_id)
    if definition is None:
        raise ApiError(404, "segment_not_found", f"no segment {segment_id!r}",
                       [{"path": "segment_id", "message": "unknown segment"}])
    responder = definition.auto_responder
    if not responder:
        raise ApiError(422, "no_auto_responder", f"segment {segment_id!r} has no auto_responder",
                       [{"path": "segment_id", "message": "no auto_responder"}])
    if str(responder.get("profile_id")) != profile.id:
        raise ApiError(
            422, "other_profile", f"segment {segment_id!r} syncs to another auto-responder "
            "profile", [{"path": "segment_id", "message": "its auto_responder names profile "
                                                          f"{responder.get('profile_id')!r}"}])
    return definition, Target.from_auto_responder(responder)


async def _reconcile(
    client: ProviderClient, target: Target, members: SegmentEmails, dry_run: bool
) -> ReconcileResult:
    """`reconcile`, with a list the provider does not have named as the segment's fault (its
    `auto_responder.list_id`); other provider failures are `provider_call`'s to explain."""
    try:
        return await reconcile(client, target, members, dry_run=dry_run)
    except ListNotFound as exc:
        raise ApiError(422, "list_not_found",
                       f"the provider has no list {target.list_id!r}: {exc.reason}",
                       [{"path": "auto_responder.list_id", "message": exc.reason}]) from None
