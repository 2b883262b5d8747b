// Segment lists: every segment with its member count, status (live, or backfilling with its
// progress), auto-responder and its sync state, and last change; refreshed every few seconds.
// Rows are updated in place so focus and the user's place survive a refresh.

import { api } from "./api.js";
import { confirmAction } from "./confirm.js";
import { announce, count, fill, h, heading, timeEl } from "./dom.js";
import { listsOf, loadProfiles, targetCell } from "./profiles.js";

const REFRESH_MS = 1500;
const COLUMNS = ["Name", "Members", "Status", "Auto-responder", "Last change", "Actions"];

export async function render(main) {
  const status = h("p", { class: "muted refresh-state" }, "Loading…");
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const body = h("tbody");
  const table = h("table", { class: "segments responsive" },
    h("caption", { class: "visually-hidden" }, "Segments, refreshed every few seconds"),
    h("thead", {}, h("tr", {}, COLUMNS.map((c, i) => h("th", { scope: "col" },
      i === COLUMNS.length - 1 ? h("span", { class: "visually-hidden" }, c) : c)))),
    body);
  const empty = h("p", { class: "empty", hidden: true }, "No segments yet. ",
    h("a", { href: "#/builder" }, "Build the first one"), ".");
  main.append(
    h("div", { class: "view-head" }, heading("Segment lists"),
      h("a", { class: "button primary", href: "#/builder" }, "New segment")),
    status, error, table, empty);

  const rows = new Map();
  let timer = null;
  let stopped = false;

  async function refresh() {
    try {
      const [{ segments }, profiles] = await Promise.all([
        api("GET", "/segments"), loadProfiles()]);
      const byId = new Map(profiles.map((p) => [p.id, p]));
      const lists = await listsOfTargets(segments, byId);
      if (stopped) return;
      update(segments, byId, lists);
      error.hidden = true;
      fill(status, "Updated ", new Date().toLocaleTimeString(), " · refreshes by itself");
    } catch (e) {
      error.hidden = false;
      error.textContent = `Could not load the segments: ${e.message}`;
    }
    if (!stopped) timer = setTimeout(refresh, document.hidden ? REFRESH_MS * 4 : REFRESH_MS);
  }

  function update(segments, profiles, lists) {
    const seen = new Set();
    for (const segment of segments) {
      seen.add(segment.id);
      let row = rows.get(segment.id);
      if (!row) {
        row = newRow(segment, remove);
        rows.set(segment.id, row);
      }
      fillRow(row, segment, profiles, lists);
      body.append(row.tr); // keeps the API's order (by id); moving a node keeps its focus
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) { row.tr.remove(); rows.delete(id); }
    }
    empty.hidden = segments.length > 0;
    table.hidden = segments.length === 0;
  }

  async function remove(segment) {
    const yes = await confirmAction({
      title: `Delete “${segment.name}”?`,
      text: `Its ${count(segment.member_count)} members leave it now (each gets a `
        + "segment.member_removed with reason segment_deleted, which the auto-responder "
        + "follows). This cannot be undone.",
      confirmLabel: "Delete segment",
    });
    if (!yes) return;
    try {
      await api("DELETE", `/segments/${encodeURIComponent(segment.id)}`);
      const row = rows.get(segment.id);
      if (row) { row.tr.remove(); rows.delete(segment.id); }
      announce(`Deleted segment ${segment.name}`);
      document.querySelector(".view-title")?.focus();
    } catch (e) {
      error.hidden = false;
      error.textContent = `Could not delete “${segment.name}”: ${e.message}`;
    }
  }

  await refresh();
  return () => { stopped = true; clearTimeout(timer); };
}

async function listsOfTargets(segments, profiles) {
  const wanted = new Set(segments.map((s) => s.auto_responder?.profile_id).filter(Boolean));
  const lists = new Map();
  await Promise.all([...wanted].filter((id) => profiles.has(id)).map(async (id) => {
    lists.set(id, await listsOf(profiles.get(id)).catch(() => []));
  }));
  return lists;
}

function newRow(segment, onDelete) {
  const cells = COLUMNS.map((label) => h("td", { "data-label": label }));
  const tr = h("tr", { dataset: { segmentId: segment.id } }, cells);
  const row = { tr, cells, segment };
  const link = h("a", { href: `#/builder/${encodeURIComponent(segment.id)}`, class: "name" });
  fill(cells[0], link, h("br"), h("code", { class: "muted id" }, segment.id));
  row.name = link;
  row.count = h("span", { class: "member-count" });
  fill(cells[1], row.count);
  const edit = h("a", { class: "button small", href: link.getAttribute("href") }, "Edit");
  const del = h("button", { type: "button", class: "small danger",
    onclick: () => onDelete(row.segment) }, "Delete");
  fill(cells[5], h("div", { class: "row-actions" }, edit, del));
  row.edit = edit;
  row.del = del;
  return row;
}

function fillRow(row, segment, profiles, lists) {
  row.segment = segment;
  row.name.textContent = segment.name;
  row.count.textContent = count(segment.member_count);
  row.edit.setAttribute("aria-label", `Edit ${segment.name}`);
  row.del.setAttribute("aria-label", `Delete ${segment.name}`);
  fill(row.cells[2], statusBadge(segment));
  fill(row.cells[3], targetCell(segment.auto_responder, profiles, lists));
  fill(row.cells[4], lastChange(segment));
}

/** "Live", or "Backfilling" with a progress bar of the share of partitions done. */
export function statusBadge(segment) {
  if (segment.status === "live") return h("span", { class: "badge live" }, "Live");
  const percent = Math.floor((segment.progress || 0) * 100);
  return h("span", { class: "backfill" },
    h("span", { class: "badge backfilling" }, `Backfilling ${percent}%`),
    h("progress", { max: "1", value: String(segment.progress || 0),
      "aria-label": `Backfill of ${segment.name}: ${percent}% done` }));
}

function lastChange(segment) {
  const version = `version ${segment.version}`;
  const at = segment.updated_at || segment.changed_at;
  return at ? [version, ", ", timeEl(at)] : [version];
}
