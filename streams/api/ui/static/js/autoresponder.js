// Auto Processing Settings of the builder: the profile, list and (optional) segment or tag a
// segment's members are kept in, i.e. its `auto_responder: {profile_id, list_id, segment_id?}`.
// Lists come from the profile's last sync; "Sync lists now" fetches them again.

import { fill, h, timeEl } from "./dom.js";
import { listsOf, profileLabel, syncLists } from "./profiles.js";

/** The fieldset, and `value()` giving the `auto_responder` to save (null: none). */
export function autoResponderSettings(initial, profiles, announce) {
  const state = { profileId: initial?.profile_id || "", listId: initial?.list_id || "",
    segmentId: initial?.segment_id || "", lists: [] };
  const byId = new Map(profiles.map((p) => [p.id, p]));

  const profileSelect = h("select", { id: "ar-profile", "aria-describedby": "ar-error" });
  const listSelect = h("select", { id: "ar-list", "aria-describedby": "ar-error" });
  const tagSelect = h("select", { id: "ar-segment", "aria-describedby": "ar-tag-hint ar-error" });
  const syncButton = h("button", { type: "button", id: "ar-sync" }, "Sync lists now");
  const syncState = h("span", { class: "sync-state", id: "ar-sync-state", role: "status" });
  const error = h("p", { class: "error", id: "ar-error", hidden: true });
  const listPart = h("div", { class: "ar-lists" },
    h("div", { class: "f" }, h("label", { for: "ar-list" }, "List (audience)"), listSelect),
    h("div", { class: "f" }, h("label", { for: "ar-segment" }, "Segment or tag (optional)"),
      tagSelect, h("p", { class: "hint", id: "ar-tag-hint" },
        "With one, leaving members are taken out of it; without, out of the list. Leaving "
        + "never unsubscribes anyone.")),
    h("div", { class: "f sync" }, syncButton, syncState));

  fill(profileSelect, h("option", { value: "" }, "None: keep the segment in segstream only"),
    profiles.map((p) => h("option", { value: p.id }, profileLabel(p))));
  if (state.profileId && !byId.has(state.profileId)) {
    profileSelect.append(h("option", { value: state.profileId },
      `${state.profileId} (unknown profile)`));
  }
  profileSelect.value = state.profileId;

  profileSelect.addEventListener("change", async () => {
    state.profileId = profileSelect.value;
    state.listId = "";
    state.segmentId = "";
    await loadLists();
  });
  listSelect.addEventListener("change", () => {
    state.listId = listSelect.value;
    state.segmentId = "";
    drawTags();
  });
  tagSelect.addEventListener("change", () => { state.segmentId = tagSelect.value; });
  syncButton.addEventListener("click", async () => {
    syncButton.disabled = true;
    fill(syncState, "Syncing…");
    try {
      const answer = await syncLists(state.profileId);
      const profile = byId.get(state.profileId);
      if (profile) profile.synced_at = answer.synced_at;
      state.lists = answer.lists;
      drawLists();
      announce(`Lists synced: ${answer.lists.length} found`);
    } catch (e) {
      showError([e.message]);
      fill(syncState, "Sync failed");
    } finally {
      syncButton.disabled = false;
    }
  });

  async function loadLists() {
    showError([]);
    listPart.hidden = !state.profileId;
    if (!state.profileId) return;
    const profile = byId.get(state.profileId);
    state.lists = [];
    try {
      if (profile) state.lists = await listsOf(profile);
    } catch (e) {
      showError([e.message]);
    }
    drawLists();
  }

  function drawLists() {
    const profile = byId.get(state.profileId);
    const options = [h("option", { value: "" }, state.lists.length ? "choose a list…"
      : "no lists: sync them first")];
    for (const list of state.lists) {
      options.push(h("option", { value: list.id },
        `${list.name}${typeof list.member_count === "number" ? ` (${list.member_count} members)` : ""}`));
    }
    if (state.listId && !state.lists.some((l) => l.id === state.listId)) {
      options.push(h("option", { value: state.listId }, `${state.listId} (not in the last sync)`));
    }
    fill(listSelect, options);
    listSelect.value = state.listId;
    fill(syncState, profile && profile.synced_at
      ? ["Lists synced ", timeEl(profile.synced_at)] : "Lists never synced");
    drawTags();
  }

  function drawTags() {
    const list = state.lists.find((l) => l.id === state.listId);
    const tags = list ? list.segments || [] : [];
    const options = [h("option", { value: "" }, "None: the whole list")];
    for (const tag of tags) {
      options.push(h("option", { value: tag.id }, `${tag.name} (${tag.type || "segment"})`));
    }
    if (state.segmentId && !tags.some((t) => t.id === state.segmentId)) {
      options.push(h("option", { value: state.segmentId },
        `${state.segmentId} (not in the last sync)`));
    }
    fill(tagSelect, options);
    tagSelect.value = state.segmentId;
    tagSelect.disabled = !state.listId;
  }

  function showError(messages) {
    error.hidden = !messages.length;
    fill(error, messages.join(" "));
    for (const el of [profileSelect, listSelect, tagSelect]) {
      if (messages.length) el.setAttribute("aria-invalid", "true");
      else el.removeAttribute("aria-invalid");
    }
  }

  const el = h("fieldset", { class: "auto-responder", id: "auto-responder" },
    h("legend", {}, "Auto Processing Settings"),
    h("p", { class: "hint" }, "Members entering the segment are added to the list (and to its "
      + "segment or tag) at the provider; members leaving are taken out."),
    h("div", { class: "f" }, h("label", { for: "ar-profile" }, "Provider profile"), profileSelect,
      profiles.length ? null : h("p", { class: "hint" }, "No profiles yet: ",
        h("a", { href: "#/providers" }, "add one under Providers"), ".")),
    listPart, error);
  const ready = loadLists();

  return {
    el, ready, showError, focus: () => profileSelect.focus(),
    value() {
      if (!state.profileId) return null;
      const target = { profile_id: state.profileId, list_id: state.listId };
      if (state.segmentId) target.segment_id = state.segmentId;
      return target;
    },
  };
}
