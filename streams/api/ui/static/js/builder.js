// The builder: a segment's name, its groups of conditions (AND inside a group, OR across
// groups), a live count of matching customers, its Auto Processing Settings; create (POST) or
// replace (PUT), then the backfill's progress. `#/builder` is a new segment, `#/builder/ID`
// edits one.

import { ApiError, api, fields } from "./api.js";
import { autoResponderSettings } from "./autoresponder.js";
import {
  MAX_CONDITIONS, MAX_GROUPS, conditionRow, newCondition, specOf, toApi,
} from "./conditions.js";
import { confirmAction } from "./confirm.js";
import { announce, count, fill, h, heading } from "./dom.js";
import { loadProfiles } from "./profiles.js";
import { statusBadge } from "./segments.js";

const PREVIEW_DELAY_MS = 400;
const PREVIEW_SAMPLE = 5;
const CONDITION_PATH = /^groups\[(\d+)\]\.conditions\[(\d+)\](?:\.(\w+))?/;
const GROUP_PATH = /^groups\[(\d+)\](?:\.conditions)?$/;

export async function render(main, segmentId) {
  let catalog, segments, profiles, existing = null;
  try {
    [catalog, { segments }, profiles] = await Promise.all([
      fields(), api("GET", "/segments"), loadProfiles()]);
    if (segmentId) existing = await api("GET", `/segments/${encodeURIComponent(segmentId)}`);
  } catch (e) {
    main.append(heading(segmentId ? "Edit segment" : "New segment"),
      h("p", { class: "error", role: "alert" }, e.status === 404
        ? `There is no segment ${segmentId}. ` : `Could not load the builder: ${e.message} `,
      h("a", { href: "#/segments" }, "Back to the segment lists")));
    return null;
  }
  const builder = new Builder(main, catalog, segments.filter((s) => s.id !== segmentId),
    profiles, existing);
  return () => builder.stop();
}

class Builder {
  constructor(main, catalog, otherSegments, profiles, existing) {
    this.catalog = catalog;
    this.others = otherSegments;
    this.existing = existing;
    this.timers = new Set();
    this.previewSeq = 0;
    const stored = existing?.groups || [{ conditions: [null] }];
    this.model = {
      name: existing?.name || "",
      groups: stored.map((g) => ({ key: nextGroupKey(),
        conditions: (g.conditions || []).map((c) => newCondition(catalog, c)) })),
    };
    this.build(main, profiles);
    if (existing) this.drawStatus(existing);
    this.drawGroups();
    this.schedulePreview(0);
    if (existing) this.pollStatus();
  }

  build(main, profiles) {
    const title = this.existing ? `Edit “${this.existing.name}”` : "New segment";
    this.title = heading(title);
    this.status = this.existing ? h("section", { class: "status-panel",
      "aria-labelledby": "status-title" }) : null;
    this.summary = h("div", { class: "error-summary", id: "error-summary", tabindex: "-1",
      role: "alert", hidden: true });
    this.nameInput = h("input", { id: "segment-name", value: this.model.name, required: true,
      maxlength: "200", autocomplete: "off", "aria-describedby": "name-error",
      oninput: (e) => { this.model.name = e.target.value; } });
    this.nameError = h("p", { class: "error", id: "name-error", hidden: true });
    this.limits = h("p", { class: "limits", id: "limits", "aria-live": "polite" });
    this.limitMessage = h("p", { class: "error limit-message", id: "limit-message",
      role: "alert", hidden: true });
    this.groupsError = h("p", { class: "error", id: "groups-error", hidden: true });
    this.groupsEl = h("div", { class: "groups", id: "groups" });
    this.addGroupButton = h("button", { type: "button", id: "add-group",
      "aria-describedby": "limits limit-message", onclick: () => this.addGroup() },
    "Add a group (OR)");
    this.preview = h("div", { class: "preview-count", id: "preview-count", role: "status",
      "aria-live": "polite" }, "Counting…");
    this.previewNote = h("p", { class: "hint", id: "preview-note" });
    this.auto = autoResponderSettings(this.existing?.auto_responder, profiles, announce);
    this.saveButton = h("button", { type: "submit", class: "primary", id: "save" },
      this.existing ? "Save changes" : "Create segment");
    this.saved = h("p", { class: "saved", role: "status" });

    const form = h("form", { id: "builder", novalidate: true,
      onsubmit: (e) => { e.preventDefault(); this.save(); } },
    this.summary,
    h("div", { class: "f name" }, h("label", { for: "segment-name" }, "Segment name"),
      this.nameInput, this.nameError),
    h("section", { class: "conditions-part", "aria-labelledby": "conditions-title" },
      h("h3", { id: "conditions-title" }, "Who is in it"),
      h("p", { class: "hint" }, "A customer is in the segment when every condition of one "
        + "group holds: AND inside a group, OR across groups. Time conditions flip by "
        + "themselves as time passes."),
      this.limits, this.limitMessage, this.groupsError, this.groupsEl,
      h("div", { class: "group-actions" }, this.addGroupButton)),
    h("aside", { class: "preview", "aria-labelledby": "preview-title" },
      h("h3", { id: "preview-title" }, "Matching customers now"), this.preview,
      this.previewNote,
      h("button", { type: "button", class: "small", onclick: () => this.schedulePreview(0) },
        "Count again")),
    this.auto.el,
    h("div", { class: "actions" }, this.saveButton,
      h("a", { class: "button", href: "#/segments" }, "Back to the lists"), this.saved));

    main.append(h("div", { class: "view-head" }, this.title,
      this.existing ? h("button", { type: "button", class: "danger", id: "delete-segment",
        onclick: () => this.remove() }, "Delete segment") : null));
    if (this.status) main.append(this.status);
    main.append(h("div", { class: "builder-layout" }, form));
  }

  stop() {
    this.stopped = true;
    for (const timer of this.timers) clearTimeout(timer);
  }

  later(fn, ms) {
    const timer = setTimeout(() => { this.timers.delete(timer); if (!this.stopped) fn(); }, ms);
    this.timers.add(timer);
    return timer;
  }

  // -- conditions and groups ----------------------------------------------------------------

  conditionCount() {
    return this.model.groups.reduce((n, g) => n + g.conditions.length, 0);
  }

  /** Redraw every group; focus goes to `focusId`, or stays on the control that had it. */
  drawGroups(focusId = document.activeElement?.id) {
    const groups = this.model.groups;
    const total = this.conditionCount();
    const parts = [];
    if (this.groupsEl.contains(this.limitMessage)) this.limits.after(this.limitMessage);
    groups.forEach((group, g) => {
      if (g > 0) parts.push(h("p", { class: "or", "aria-hidden": "true" }, "or"));
      parts.push(this.groupSection(group, g, total));
    });
    fill(this.groupsEl, parts);
    const full = total >= MAX_CONDITIONS;
    fill(this.limits, h("span", { class: full ? "at-limit" : "" },
      `Conditions: ${total} of ${MAX_CONDITIONS}`), " · ",
    h("span", { class: groups.length >= MAX_GROUPS ? "at-limit" : "" },
      `Groups: ${groups.length} of ${MAX_GROUPS}`));
    setBlocked(this.addGroupButton, full || groups.length >= MAX_GROUPS);
    const stillTrue = { conditions: full, groups: groups.length >= MAX_GROUPS };
    if (!stillTrue[this.limitHit]) this.limitMessage.hidden = true;
    const target = focusId && document.getElementById(focusId);
    if (target) target.focus();
  }

  groupSection(group, g, total) {
    const titleId = `${group.key}-title`;
    const items = group.conditions.map((cond, c) => this.conditionItem(cond, g, c));
    const add = h("button", { type: "button", class: "add-condition", id: `${group.key}-add`,
      "aria-describedby": "limits limit-message", onclick: () => this.addCondition(g) },
    "Add a condition (AND)");
    setBlocked(add, total >= MAX_CONDITIONS);
    const removeGroup = this.model.groups.length > 1 ? h("button", { type: "button",
      class: "small link", "aria-label": `Remove group ${g + 1}`,
      onclick: () => this.removeGroup(g) }, "Remove group") : null;
    return h("section", { class: "group", id: group.key, "aria-labelledby": titleId,
      dataset: { path: `groups[${g}]` } },
    h("div", { class: "group-head" },
      h("h4", { id: titleId }, `Group ${g + 1}`, h("span", { class: "muted" },
        group.conditions.length > 1 ? ": all of these" : "")),
      removeGroup),
    h("p", { class: "error group-error", id: `${group.key}-error`, hidden: true }),
    h("ol", { class: "conditions" }, items),
    add);
  }

  conditionItem(cond, g, c) {
    const spec = specOf(cond, this.catalog);
    const only = this.conditionCount() === 1;
    const ui = {
      segments: this.others, announce,
      onChange: (structural) => {
        if (structural) this.drawGroups();
        this.schedulePreview();
      },
    };
    return h("li", { class: "condition", id: cond.key, dataset: { path:
      `groups[${g}].conditions[${c}]` } },
    h("fieldset", {},
      h("legend", { class: "cond-title" }, `Condition ${c + 1}`,
        h("span", { class: "visually-hidden" }, ` of group ${g + 1}`)),
      conditionRow(cond, spec, this.catalog, ui),
      only ? null : h("button", { type: "button", class: "small link remove-condition",
        id: `${cond.key}-remove`, "aria-label": `Remove condition ${c + 1} of group ${g + 1}`,
        onclick: () => this.removeCondition(g, c) }, "Remove")),
    h("p", { class: "error cond-error", id: `${cond.key}-error`, hidden: true }));
  }

  addCondition(g) {
    if (this.conditionCount() >= MAX_CONDITIONS) {
      this.showLimit("conditions", `A segment can have at most ${MAX_CONDITIONS} conditions, `
        + "across all its groups. Remove one to add another.", `${this.model.groups[g].key}-add`);
      return;
    }
    const cond = newCondition(this.catalog);
    this.model.groups[g].conditions.push(cond);
    this.drawGroups(`${cond.key}-field`);
    announce(`Condition ${this.model.groups[g].conditions.length} added to group ${g + 1}`);
    this.schedulePreview();
  }

  addGroup() {
    if (this.model.groups.length >= MAX_GROUPS) {
      this.showLimit("groups", `A segment can have at most ${MAX_GROUPS} groups.`, "add-group");
      return;
    }
    if (this.conditionCount() >= MAX_CONDITIONS) {
      this.showLimit("conditions", "A new group needs a condition, and this segment "
        + "already has "
        + `${MAX_CONDITIONS} of ${MAX_CONDITIONS}. Remove one first.`, "add-group");
      return;
    }
    const cond = newCondition(this.catalog);
    this.model.groups.push({ key: nextGroupKey(), conditions: [cond] });
    this.drawGroups(`${cond.key}-field`);
    announce(`Group ${this.model.groups.length} added`);
    this.schedulePreview();
  }

  removeCondition(g, c) {
    const group = this.model.groups[g];
    group.conditions.splice(c, 1);
    if (!group.conditions.length) this.model.groups.splice(g, 1);
    const next = this.model.groups[Math.min(g, this.model.groups.length - 1)];
    const neighbour = next.conditions[Math.min(c, next.conditions.length - 1)];
    this.drawGroups(`${neighbour.key}-field`);
    announce("Condition removed");
    this.schedulePreview();
  }

  removeGroup(g) {
    this.model.groups.splice(g, 1);
    const next = this.model.groups[Math.min(g, this.model.groups.length - 1)];
    this.drawGroups(`${next.key}-add`);
    announce(`Group ${g + 1} removed`);
    this.schedulePreview();
  }

  /** Say why an add did nothing, beside the button pressed (`buttonId`); the message stays
   *  while that limit (`kind`) is reached. */
  showLimit(kind, message, buttonId) {
    this.limitHit = kind;
    this.limitMessage.hidden = false;
    this.limitMessage.textContent = message;
    document.getElementById(buttonId)?.after(this.limitMessage);
  }

  definition() {
    return {
      name: this.model.name.trim(),
      groups: this.model.groups.map((g) => ({
        conditions: g.conditions.map((c) => toApi(c, this.catalog)) })),
    };
  }

  // -- live count ---------------------------------------------------------------------------

  schedulePreview(delay = PREVIEW_DELAY_MS) {
    clearTimeout(this.previewTimer);
    this.timers.delete(this.previewTimer);
    this.previewTimer = this.later(() => this.runPreview(), delay);
  }

  async runPreview() {
    const seq = ++this.previewSeq;
    const body = this.definition();
    if (!body.name) body.name = "preview";
    this.preview.classList.add("stale");
    try {
      const answer = await api("POST", `/segments/preview?sample=${PREVIEW_SAMPLE}`, body);
      if (seq !== this.previewSeq || this.stopped) return;
      this.showPreview(answer);
      this.showErrors([], { source: "preview" });
    } catch (e) {
      if (seq !== this.previewSeq || this.stopped) return;
      this.preview.classList.remove("stale");
      if (e instanceof ApiError && e.status === 422) {
        const shown = e.details.filter((d) => this.touchedPath(d.path));
        fill(this.preview, shown.length ? "Fix the marked conditions to count."
          : "Complete every condition to count.");
        this.previewNote.textContent = "";
        this.showErrors(shown, { source: "preview" });
      } else {
        fill(this.preview, `Could not count: ${e.message}`);
      }
    }
  }

  /** Whether a problem of the preview is worth showing: not on a condition still untouched
   *  (a fresh one has no value yet), not on the name (the preview does not need one). */
  touchedPath(path) {
    const match = CONDITION_PATH.exec(path || "");
    if (!match) return path !== "name";
    const cond = this.model.groups[Number(match[1])]?.conditions[Number(match[2])];
    return !cond || cond.touched;
  }

  showPreview(answer) {
    this.preview.classList.remove("stale");
    const exact = answer.complete;
    const number = exact ? answer.count : answer.estimated_count;
    const sample = (answer.sample || []).map((id, n) => [n ? ", " : "",
      h("a", { href: `#/customers/${encodeURIComponent(id)}` }, id)]);
    fill(this.preview,
      h("strong", { class: "count", id: "preview-number" }, `${exact ? "" : "≈ "}${count(number)}`),
      ` ${number === 1 ? "customer matches" : "customers match"}`,
      sample.length ? h("span", { class: "sample" }, " (for example ", sample, ")") : null);
    this.previewNote.textContent = exact
      ? `Evaluated over all ${count(answer.customers)} stored customers.`
      : `Estimated: ${count(answer.count)} matched among the ${count(answer.scanned)} of `
        + `${count(answer.customers)} stored customers evaluated.`;
  }

  // -- saving -------------------------------------------------------------------------------

  async save() {
    const body = this.definition();
    const target = this.auto.value();
    if (target) body.auto_responder = target;
    this.saveButton.disabled = true;
    this.saved.textContent = "Saving…";
    this.previewSeq += 1; // a count under way must not redraw what the save answers
    for (const group of this.model.groups) {
      for (const cond of group.conditions) cond.touched = true;
    }
    try {
      const answer = this.existing
        ? await api("PUT", `/segments/${encodeURIComponent(this.existing.id)}`, body)
        : await api("POST", "/segments", body);
      this.showErrors([], { source: "save" });
      if (!this.existing) {
        announce(`Segment ${answer.name} created`);
        location.hash = `#/builder/${encodeURIComponent(answer.id)}`;
        return;
      }
      const unchanged = answer.version === this.existing.version;
      this.existing = answer;
      this.title.textContent = `Edit “${answer.name}”`;
      this.saved.textContent = unchanged ? `No change: still version ${answer.version}.`
        : `Saved as version ${answer.version}.`;
      announce(unchanged ? this.saved.textContent : `Saved as version ${answer.version}; `
        + `${answer.status === "live" ? "live" : "backfilling"}`);
      this.drawStatus(answer);
      this.pollStatus();
    } catch (e) {
      this.saved.textContent = "";
      const details = e.details.length ? e.details : [{ path: "", message: e.message }];
      this.showErrors(details, { source: "save", headline: e.message });
    } finally {
      this.saveButton.disabled = false;
    }
  }

  /** Put each message beside what it names (a condition, a group, the name, the
   *  auto-responder). A save's messages replace every earlier one and are listed in the
   *  summary, which takes focus; a count's replace only those of the conditions part. */
  showErrors(details, { source, headline = "" }) {
    const saving = source === "save";
    const scope = saving ? "#builder" : "#builder .conditions-part";
    for (const el of document.querySelectorAll(`${scope} .error:not(.limit-message)`)) {
      el.hidden = true;
      el.textContent = "";
    }
    for (const el of document.querySelectorAll(`${scope} [aria-invalid]`)) {
      el.removeAttribute("aria-invalid");
    }
    for (const el of document.querySelectorAll(`${scope} .invalid`)) {
      el.classList.remove("invalid");
    }
    if (saving) {
      this.auto.showError([]);
      this.nameError.hidden = true;
      this.nameInput.removeAttribute("aria-invalid");
    }
    const listed = [];
    const arMessages = [];
    for (const detail of details) {
      const place = this.placeOf(detail.path || "");
      if (place.auto) arMessages.push(detail.message);
      else addMessage(place.error, detail.message);
      for (const input of place.inputs) input.setAttribute("aria-invalid", "true");
      place.box?.classList.add("invalid");
      listed.push({ text: `${place.label}: ${detail.message}`, focus: place.inputs[0] });
    }
    if (arMessages.length) this.auto.showError(arMessages);
    if (!saving) return;
    this.summary.hidden = !listed.length;
    if (!listed.length) return;
    fill(this.summary, h("h3", {}, "The segment was not saved"),
      headline ? h("p", {}, headline) : null,
      h("ul", {}, listed.map((item) => h("li", {}, item.focus
        ? h("button", { type: "button", class: "link", onclick: () => item.focus.focus() },
          item.text) : item.text))));
    this.summary.focus();
  }

  /** Where a problem's `path` (as the API writes it) is shown. */
  placeOf(path) {
    const cond = CONDITION_PATH.exec(path);
    if (cond) {
      const [g, c, part] = [Number(cond[1]), Number(cond[2]), cond[3]];
      const model = this.model.groups[g]?.conditions[c];
      const box = model && document.getElementById(model.key);
      if (box) {
        const inputs = inputsOf(box, part);
        return { error: document.getElementById(`${model.key}-error`), inputs, box,
          label: `Group ${g + 1}, condition ${c + 1}${part ? ` (${part.replace("_", " ")})` : ""}` };
      }
    }
    const group = GROUP_PATH.exec(path);
    const groupModel = group && this.model.groups[Number(group[1])];
    if (groupModel) {
      return { error: document.getElementById(`${groupModel.key}-error`), inputs: [],
        box: document.getElementById(groupModel.key), label: `Group ${Number(group[1]) + 1}` };
    }
    if (path === "name") {
      return { error: this.nameError, inputs: [this.nameInput], label: "Name" };
    }
    if (path.startsWith("auto_responder")) {
      return { auto: true, inputs: [document.getElementById("ar-profile")],
        label: "Auto Processing Settings" };
    }
    return { error: this.groupsError, inputs: [], label: path || "Segment" };
  }

  // -- an existing segment: status, backfill progress, delete --------------------------------

  drawStatus(segment) {
    fill(this.status,
      h("h3", { id: "status-title" }, "Status"),
      h("dl", { class: "status-list" },
        h("div", {}, h("dt", {}, "Members"),
          h("dd", { class: "member-count", id: "status-members" }, count(segment.member_count))),
        h("div", {}, h("dt", {}, "State"), h("dd", { id: "status-state" }, statusBadge(segment))),
        h("div", {}, h("dt", {}, "Version"), h("dd", { id: "status-version" },
          String(segment.version))),
        h("div", {}, h("dt", {}, "Id"), h("dd", {}, h("code", {}, segment.id)))));
  }

  async pollStatus() {
    clearTimeout(this.statusTimer);
    this.timers.delete(this.statusTimer);
    let segment = this.existing;
    try {
      segment = await api("GET", `/segments/${encodeURIComponent(this.existing.id)}`);
    } catch (e) {
      if (e.status === 404) {
        fill(this.status, h("p", { class: "error" }, "This segment was deleted."));
        return;
      }
    }
    if (this.stopped) return;
    const wasBackfilling = this.lastStatus === "backfilling";
    this.lastStatus = segment.status;
    this.drawStatus(segment);
    if (wasBackfilling && segment.status === "live") {
      announce(`Backfill done: ${segment.member_count} members`);
    }
    this.statusTimer = this.later(() => this.pollStatus(),
      segment.status === "live" ? 2000 : 700);
  }

  async remove() {
    const segment = this.existing;
    const yes = await confirmAction({
      title: `Delete “${segment.name}”?`,
      text: "Every member leaves it now (each gets a segment.member_removed with reason "
        + "segment_deleted, which the auto-responder follows). This cannot be undone.",
      confirmLabel: "Delete segment",
    });
    if (!yes) return;
    try {
      await api("DELETE", `/segments/${encodeURIComponent(segment.id)}`);
      announce(`Deleted segment ${segment.name}`);
      location.hash = "#/segments";
    } catch (e) {
      this.showErrors([{ path: "", message: e.message }], { source: "save" });
    }
  }
}

let groupKeys = 0;
function nextGroupKey() {
  groupKeys += 1;
  return `g${groupKeys}`;
}

/** Blocked, not disabled: the button stays focusable and, pressed, says why. */
function setBlocked(button, blocked) {
  if (blocked) button.setAttribute("aria-disabled", "true");
  else button.removeAttribute("aria-disabled");
}

function addMessage(el, message) {
  if (!el) return;
  el.hidden = false;
  el.textContent = el.textContent ? `${el.textContent} ${message}` : message;
}

/** The inputs of a condition a path part names (`value`, `op`, `field`, `within_days`). */
function inputsOf(box, part) {
  const key = box.id;
  const byPart = {
    field: [`${key}-field`, `${key}-property`], op: [`${key}-op`],
    within_days: [`${key}-within`],
  };
  const ids = byPart[part];
  const found = ids
    ? ids.map((id) => document.getElementById(id)).filter(Boolean)
    : [...box.querySelectorAll(".value")];
  return found.length ? found : [document.getElementById(`${key}-field`)].filter(Boolean);
}
