// Customer lookup (`#/customers/ID`): the customer's features; for each segment, whether they
// are in it and why (each condition's result); and `next_evaluation`, when time alone will
// re-evaluate them and for which conditions.

import { api } from "./api.js";
import { conditionText, fill, h, heading, timeEl, valueText } from "./dom.js";

export async function render(main, customerId) {
  const input = h("input", { id: "customer-id", name: "customer", required: true,
    value: customerId || "", autocomplete: "off", spellcheck: "false" });
  const result = h("div", { class: "customer", id: "customer-result", "aria-live": "polite" });
  const form = h("form", { role: "search", class: "lookup", "aria-label": "Customer lookup",
    onsubmit: (e) => {
      e.preventDefault();
      const id = input.value.trim();
      if (!id) { input.focus(); return; }
      const hash = `#/customers/${encodeURIComponent(id)}`;
      if (location.hash === hash) show(id, result); else location.hash = hash;
    } },
  h("label", { for: "customer-id" }, "Customer id"),
  h("div", { class: "inline" }, input, h("button", { type: "submit", class: "primary" },
    "Look up")));
  main.append(h("div", { class: "view-head" }, heading("Customer lookup")), form, result);
  if (customerId) await show(customerId, result);
  return null;
}

async function show(customerId, result) {
  fill(result, h("p", { class: "muted" }, "Loading…"));
  let customer, names;
  try {
    const [answer, list] = await Promise.all([
      api("GET", `/customers/${encodeURIComponent(customerId)}`),
      api("GET", "/segments").catch(() => ({ segments: [] })),
    ]);
    customer = answer;
    names = new Map(list.segments.map((s) => [s.id, s.name]));
  } catch (e) {
    fill(result, h("p", { class: "error", role: "alert" }, e.status === 404
      ? `No customer ${customerId}: no event about them has been processed.` : e.message));
    return;
  }
  const name = (id) => names.get(id) || id;
  const explained = Object.entries(customer.explain || {});
  fill(result,
    h("h3", { id: "customer-title" }, customer.customer_id),
    h("p", { class: "in-segments" }, customer.segments.length
      ? ["In ", customer.segments.length === 1 ? "1 segment: " : `${customer.segments.length} segments: `,
        customer.segments.map((id, n) => [n ? ", " : "", h("a", {
          href: `#/builder/${encodeURIComponent(id)}` }, name(id))])]
      : "In no segment."),
    nextEvaluation(customer.next_evaluation, name),
    h("section", { "aria-labelledby": "why-title", class: "why" },
      h("h4", { id: "why-title" }, "Each segment, and why"),
      explained.length ? explained.map(([id, why]) => explanation(id, name(id), why))
        : h("p", { class: "muted" }, "There are no segments.")),
    h("section", { "aria-labelledby": "features-title", class: "features" },
      h("h4", { id: "features-title" }, "Features"), features(customer.features)));
}

function nextEvaluation(next, name) {
  const title = h("h4", { id: "next-title" }, "Next evaluation by time");
  if (!next) {
    return h("section", { class: "next", "aria-labelledby": "next-title" }, title,
      h("p", {}, "None: only an event can change this customer's segments."));
  }
  const conditions = next.conditions || [];
  return h("section", { class: "next", "aria-labelledby": "next-title" }, title,
    h("p", {}, next.at ? ["Re-evaluated ", timeEl(next.at), ` (${new Date(next.at)
      .toLocaleString()})`] : "Not scheduled yet.",
    conditions.length ? ", when these conditions may change:" : "."),
    conditions.length ? h("ul", {}, conditions.map((c) => h("li", {},
      h("strong", {}, name(c.segment_id)), ": ", conditionText(c),
      c.changes_at ? [" (changes ", timeEl(c.changes_at), ")"] : null))) : null);
}

function explanation(id, name, why) {
  const holding = why.groups.filter((g) => g.result);
  const verdict = why.member ? "In" : "Out";
  let reason;
  if (holding.length) {
    reason = `${holding.map((g) => groupName(g.path)).join(" and ")} ${holding.length === 1
      ? "holds" : "hold"}: every condition in it is true.`;
  } else {
    reason = `No group holds: ${why.groups.map((g) => `${groupName(g.path)} fails on ${
      g.conditions.filter((c) => !c.result).map(conditionText).join(" and ")}`).join("; ")}.`;
  }
  const drift = why.member !== why.matches_now
    ? h("p", { class: "warn" }, `Evaluated now the customer would be ${why.matches_now ? "in"
      : "out"}; the change is on its way (time or a backfill).`) : null;
  return h("details", { class: `explain ${why.member ? "is-in" : "is-out"}`,
    dataset: { segmentId: id }, open: why.member ? true : null },
  h("summary", {}, h("span", { class: `badge ${why.member ? "live" : "out"}` }, verdict), " ",
    name, h("span", { class: "muted" }, ` (version ${why.version})`)),
  h("p", { class: "reason" }, reason), drift,
  why.groups.map((g) => h("div", { class: "explain-group" },
    h("p", {}, h("strong", {}, groupName(g.path)), g.result ? " holds" : " fails"),
    h("ul", { class: "results" }, g.conditions.map((c) => h("li", {
      class: c.result ? "true" : "false" },
    h("span", { class: "mark", "aria-hidden": "true" }, c.result ? "✓" : "✗"),
    h("span", { class: "visually-hidden" }, c.result ? "true: " : "false: "),
    conditionText(c)))))));
}

function groupName(path) {
  const match = /groups\[(\d+)\]/.exec(path || "");
  return match ? `Group ${Number(match[1]) + 1}` : path;
}

function features(values) {
  const rows = Object.entries(values || {}).sort(([a], [b]) => a.localeCompare(b));
  return h("table", { class: "features-table" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Field"),
      h("th", { scope: "col" }, "Value"))),
    h("tbody", {}, rows.map(([key, value]) => h("tr", {},
      h("th", { scope: "row" }, key), h("td", {}, featureValue(value))))));
}

function featureValue(value) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "not set");
  if (Array.isArray(value)) {
    return value.length ? valueText(value) : h("span", { class: "muted" }, "none");
  }
  if (typeof value === "object") return h("code", {}, JSON.stringify(value));
  return String(value);
}
