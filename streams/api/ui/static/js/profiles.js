// Auto-responder profiles and the lists their last sync fetched, shared by the views that show
// where a segment sends its members.

import { api } from "./api.js";
import { h, timeEl } from "./dom.js";

export const PROVIDER_NAMES = {
  mailchimp: "Mailchimp", activecampaign: "ActiveCampaign", sendlane: "Sendlane",
};

const listsCache = new Map(); // profile id -> {synced_at, lists}

export async function loadProfiles() {
  return (await api("GET", "/providers/profiles")).profiles;
}

/** The lists of `profile`'s last sync, fetched again only when it synced since. */
export async function listsOf(profile) {
  const cached = listsCache.get(profile.id);
  if (cached && cached.synced_at === profile.synced_at) return cached.lists;
  const answer = await api("GET", `/providers/profiles/${encodeURIComponent(profile.id)}/lists`);
  listsCache.set(profile.id, answer);
  return answer.lists;
}

/** POST .../sync: fetch the provider's lists now; answers the new lists. */
export async function syncLists(profileId) {
  const answer = await api("POST", `/providers/profiles/${encodeURIComponent(profileId)}/sync`);
  listsCache.set(profileId, answer);
  return answer;
}

/** The masked credentials (`{"api_key": "…abcd"}`) as one line. */
export function hintText(hint) {
  if (!hint) return "hidden";
  if (typeof hint !== "object") return String(hint);
  return Object.entries(hint).map(([name, value]) => `${name}: ${value}`).join(", ");
}

export function profileLabel(profile) {
  return `${profile.name} (${PROVIDER_NAMES[profile.provider] || profile.provider})`;
}

/** What a segment's `auto_responder` points at, for a table cell: the profile, list and
 *  segment or tag by name, and the state of the profile's list sync. */
export function targetCell(target, profiles, lists) {
  if (!target) return [h("span", { class: "muted" }, "None")];
  const profile = profiles.get(target.profile_id);
  if (!profile) {
    return [h("span", { class: "warn" }, `Unknown profile ${target.profile_id}`)];
  }
  const found = (lists.get(profile.id) || []).find((l) => l.id === target.list_id);
  const tag = found && target.segment_id
    ? (found.segments || []).find((s) => s.id === target.segment_id) : null;
  const where = [found ? found.name : target.list_id];
  if (target.segment_id) where.push(tag ? tag.name : target.segment_id);
  const parts = [
    h("span", { class: "target" }, profile.name, " → ", where.join(" / ")),
    h("br"),
  ];
  if (!profile.synced_at) {
    parts.push(h("span", { class: "sync-state warn" }, "lists never synced"));
  } else if (!found || (target.segment_id && !tag)) {
    parts.push(h("span", { class: "sync-state warn" }, "not in the last sync (",
      timeEl(profile.synced_at), ")"));
  } else {
    parts.push(h("span", { class: "sync-state ok" }, "lists synced ", timeEl(profile.synced_at)));
  }
  return parts;
}
