// One condition of the builder: its editor state, its inputs (generated from the field's entry
// in GET /fields: type, operators, within_days), and its JSON for the API (contract section 5).
//
// The page shapes values; the API judges them. A value the page cannot read (an empty number,
// say) is sent as it is or left out, and the API's 422 names the problem beside the condition.

import { h, OPERATOR_LABELS } from "./dom.js";

export const MAX_CONDITIONS = 9; // contract section 5: at most 9 conditions in all
export const MAX_GROUPS = 5; // and at most 5 groups per segment

const PROPERTY_FIELD = "properties.<name>";
// The operator a field starts with: the one most segments use on its type.
const FIRST_CHOICE_OPS = ["gte", "includes_any", "within_last", "eq"];
const ENUM_VALUES = { contact_type: ["prospect", "customer"] };

// What each operator's value looks like (as segments/values.py checks it).
const SHAPE = {
  eq: "one", neq: "one", in: "many", not_in: "many",
  gt: "number", gte: "number", lt: "number", lte: "number", between: "range",
  contains: "substring", starts_with: "substring", ends_with: "substring",
  exists: "nothing", not_exists: "nothing",
  includes_any: "members", includes_all: "members", includes_none: "members",
  within_last: "duration", not_within_last: "duration",
  before: "moment", after: "moment",
};

const TYPE_GROUPS = [
  ["Profile", ["enum", "text", "id"]],
  ["Orders and money", ["count", "money"]],
  ["Dates", ["datetime"]],
  ["Lists", ["set", "segments"]],
  ["Custom", ["property"]],
];

let nextKey = 0;

/** A new condition's editor state; `raw` is a stored condition when editing a segment. */
export function newCondition(catalog, raw = null) {
  nextKey += 1;
  const cond = { key: `c${nextKey}`, field: "", property: "", op: "", touched: !!raw,
    within: "", v: blankValue() };
  if (!raw) {
    const first = catalog.find((f) => f.field === "total_spent") || catalog[0];
    setField(cond, first.field, catalog);
    return cond;
  }
  const field = String(raw.field || "");
  if (field.startsWith("properties.")) {
    cond.field = PROPERTY_FIELD;
    cond.property = field.slice("properties.".length);
  } else {
    cond.field = field;
  }
  cond.op = String(raw.op || "");
  cond.within = raw.within_days === undefined || raw.within_days === null
    ? "" : String(raw.within_days);
  readValue(cond, raw.value);
  return cond;
}

function blankValue() {
  return { text: "", kind: "text", items: [], low: "", high: "", amount: "", unit: "days",
    mode: "date", date: "" };
}

export function specOf(cond, catalog) {
  return catalog.find((f) => f.field === cond.field) || null;
}

/** Change the field, keeping the operator when the new field takes it too. */
export function setField(cond, field, catalog) {
  const before = specOf(cond, catalog);
  cond.field = field;
  const spec = specOf(cond, catalog);
  if (before && spec && before.type !== spec.type) cond.v = blankValue();
  if (spec && !spec.operators.includes(cond.op)) {
    cond.op = FIRST_CHOICE_OPS.find((op) => spec.operators.includes(op)) || spec.operators[0];
  }
  if (spec && !spec.within_days) cond.within = "";
}

/** The editor state of a stored value, for the operator's shape. */
function readValue(cond, value) {
  const v = cond.v;
  const shape = SHAPE[cond.op];
  if (shape === "many" || shape === "members") {
    v.items = Array.isArray(value) ? value.map(String) : [];
    if (Array.isArray(value) && value.length) v.kind = kindOf(value[0]);
  } else if (shape === "range") {
    [v.low, v.high] = Array.isArray(value) ? value.map(String) : ["", ""];
    v.kind = "number";
  } else if (shape === "duration" || (shape === "moment" && value && typeof value === "object")) {
    const [[unit, amount] = ["days", ""]] = Object.entries(value || {});
    Object.assign(v, { unit, amount: String(amount), mode: "ago" });
  } else if (shape === "moment") {
    const text = value === undefined || value === null ? "" : String(value);
    if (text.length === 10 || !text) Object.assign(v, { mode: "date", date: text });
    else Object.assign(v, { mode: "datetime", text });
  } else if (value !== undefined && value !== null) {
    v.text = String(value);
    v.kind = kindOf(value);
  }
}

function kindOf(value) {
  if (typeof value === "boolean") return "bool";
  if (typeof value === "number") return "number";
  return "text";
}

/** The condition as the API takes it: {field, op, value?, within_days?}. */
export function toApi(cond, catalog) {
  const spec = specOf(cond, catalog);
  const field = cond.field === PROPERTY_FIELD ? `properties.${cond.property.trim()}` : cond.field;
  const out = { field, op: cond.op };
  const value = spec ? apiValue(cond, spec.type) : undefined;
  if (value !== undefined) out.value = value;
  if (cond.within.trim() !== "") out.within_days = numberOr(cond.within, "count");
  return out;
}

function apiValue(cond, type) {
  const v = cond.v;
  switch (SHAPE[cond.op]) {
    case "nothing": return undefined;
    case "one": return scalar(v.text, type, v.kind);
    case "many": return v.items.map((item) => scalar(item, type, v.kind));
    case "members": return [...v.items];
    case "number": return scalar(v.text, type, "number");
    case "range": return [scalar(v.low, type, "number"), scalar(v.high, type, "number")];
    case "substring": return v.text === "" ? undefined : v.text;
    case "duration": return { [v.unit]: numberOr(v.amount, "count") };
    case "moment":
      if (v.mode === "ago") return { [v.unit]: numberOr(v.amount, "count") };
      return (v.mode === "date" ? v.date : v.text.trim()) || undefined;
    default: return undefined;
  }
}

function scalar(text, type, kind) {
  if (type === "property") {
    if (kind === "bool") return text === "true";
    if (kind === "number") return numberOr(text, "property");
    return text === "" ? undefined : text;
  }
  if (type === "count" || type === "money") return numberOr(text, type);
  return text === "" ? undefined : text;
}

/** A number when `text` reads as one (money with decimals stays a decimal string, exact);
 *  otherwise the text itself, for the API to name what is wrong with it. */
function numberOr(text, type) {
  const trimmed = String(text).trim();
  if (trimmed === "") return undefined;
  if (!/^-?\d+(\.\d+)?$/.test(trimmed)) return trimmed;
  if (type === "money" && trimmed.includes(".")) return trimmed;
  return Number(trimmed);
}

/** The inputs of one condition, as an <li>. `ui` gives `onChange(structural)`: structural
 *  changes (field, operator, unit or mode) redraw the condition; typing only re-counts. */
export function conditionRow(cond, spec, catalog, ui) {
  const id = (part) => `${cond.key}-${part}`;
  const errorId = id("error");
  const described = errorId;
  const touch = (structural) => { cond.touched = true; ui.onChange(structural); };

  const fieldSelect = h("select", { id: id("field"), "aria-describedby": `${id("hint")} ${described}`,
    onchange: (e) => { setField(cond, e.target.value, catalog); touch(true); } },
  TYPE_GROUPS.map(([label, types]) => h("optgroup", { label },
    catalog.filter((f) => types.includes(f.type)).map((f) => h("option", {
      value: f.field, selected: f.field === cond.field }, fieldLabel(f.field))))));
  const parts = [field("Field", fieldSelect,
    h("p", { class: "hint", id: id("hint") }, spec ? spec.description : "unknown field"))];

  if (cond.field === PROPERTY_FIELD) {
    parts.push(field("Property name", h("input", { id: id("property"), value: cond.property,
      placeholder: "plan", "aria-describedby": described, spellcheck: "false",
      oninput: (e) => { cond.property = e.target.value; touch(false); } })));
  }
  const operators = spec ? spec.operators : [cond.op];
  parts.push(field("Operator", h("select", { id: id("op"), "aria-describedby": described,
    onchange: (e) => { cond.op = e.target.value; touch(true); } },
  operators.map((op) => h("option", { value: op, selected: op === cond.op },
    OPERATOR_LABELS[op] || op)))));
  parts.push(...valueInputs(cond, spec, id, described, touch, ui));
  if (spec && spec.within_days) {
    parts.push(field("Only the last … days (optional)", h("input", {
      id: id("within"), type: "number", min: "1", step: "1", inputmode: "numeric",
      value: cond.within, "aria-describedby": described, class: "within-days",
      oninput: (e) => { cond.within = e.target.value; touch(false); } })));
  }
  return h("div", { class: "cond-grid" }, parts);
}

function field(label, control, ...after) {
  return h("div", { class: "f" }, h("label", { for: control.id }, label), control, after);
}

function fieldLabel(name) {
  if (name === PROPERTY_FIELD) return "custom property…";
  return name;
}

/** The value inputs for the operator's shape and the field's type. */
function valueInputs(cond, spec, id, described, touch, ui) {
  const v = cond.v;
  const type = spec ? spec.type : "text";
  const shape = SHAPE[cond.op];
  const text = (label, attrs) => field(label, h("input", { id: id("value"), value: v.text,
    "aria-describedby": described, class: "value", spellcheck: "false",
    oninput: (e) => { v.text = e.target.value; touch(false); }, ...attrs }));
  const numberAttrs = type === "count"
    ? { type: "number", min: "0", step: "1", inputmode: "numeric" }
    : { type: "number", step: "any", inputmode: "decimal" };
  const kinds = () => field("Value type", h("select", { id: id("kind"),
    onchange: (e) => {
      v.kind = e.target.value;
      if (v.kind === "bool" && !["true", "false"].includes(v.text)) v.text = "true";
      touch(true);
    } },
  [["text", "text"], ["number", "number"], ["bool", "true/false"]].map(([value, label]) =>
    h("option", { value, selected: v.kind === value }, label))));

  switch (shape) {
    case "nothing":
      return [];
    case "one":
      if (type === "enum") return [choice(id("value"), "Value", ENUM_VALUES[cond.field] || [],
        v.text, described, (value) => { v.text = value; touch(false); })];
      if (type === "property") {
        if (v.kind === "bool") return [kinds(), choice(id("value"), "Value", ["true", "false"],
          v.text || "true", described, (value) => { v.text = value; touch(false); }, true)];
        return [kinds(), text("Value", v.kind === "number" ? numberAttrs : {})];
      }
      return [text("Value", ["count", "money"].includes(type) ? numberAttrs : {})];
    case "many":
      if (type === "enum") return [checkboxes(id("value"), "Values", ENUM_VALUES[cond.field] || [],
        v.items, described, touch)];
      return [...(type === "property" ? [kinds()] : []), tagField(id("value"), "Values", v.items,
        described, touch, ui, ["count", "money"].includes(type) ? "a number, then Enter" : null)];
    case "members":
      if (type === "segments") return [checkboxes(id("value"), "Segments",
        ui.segments.map((s) => [s.id, s.name]), v.items, described, touch)];
      return [tagField(id("value"), "Values", v.items, described, touch, ui, null)];
    case "number":
      return [text("Value", numberAttrs)];
    case "range":
      return [h("div", { class: "f range" },
        field("From", h("input", { id: id("value"), value: v.low, ...numberAttrs,
          "aria-describedby": described, class: "value",
          oninput: (e) => { v.low = e.target.value; touch(false); } })),
        field("To", h("input", { id: id("value-high"), value: v.high, ...numberAttrs,
          "aria-describedby": described, class: "value",
          oninput: (e) => { v.high = e.target.value; touch(false); } })))];
    case "substring":
      return [text("Text", {})];
    case "duration":
      return [...amountAndUnit(v, id, described, touch)];
    case "moment":
      return [field("Compared with", h("select", { id: id("mode"),
        onchange: (e) => { v.mode = e.target.value; touch(true); } },
      [["date", "a date"], ["ago", "a time ago (moves with now)"],
        ["datetime", "a date and time"]].map(([value, label]) =>
        h("option", { value, selected: v.mode === value }, label)))),
      ...momentInputs(v, id, described, touch)];
    default:
      return [text("Value", {})];
  }
}

function momentInputs(v, id, described, touch) {
  if (v.mode === "ago") return amountAndUnit(v, id, described, touch);
  if (v.mode === "datetime") {
    return [field("Date and time (with a time zone)", h("input", { id: id("value"),
      value: v.text, placeholder: "2026-01-31T09:00:00Z", "aria-describedby": described,
      class: "value", spellcheck: "false",
      oninput: (e) => { v.text = e.target.value; touch(false); } }))];
  }
  return [field("Date", h("input", { id: id("value"), type: "date", value: v.date,
    "aria-describedby": described, class: "value",
    oninput: (e) => { v.date = e.target.value; touch(false); } }))];
}

function amountAndUnit(v, id, described, touch) {
  return [
    field("Amount", h("input", { id: id("value"), type: "number", min: "1", step: "1",
      inputmode: "numeric", value: v.amount, "aria-describedby": described, class: "value",
      oninput: (e) => { v.amount = e.target.value; touch(false); } })),
    field("Unit", h("select", { id: id("unit"),
      onchange: (e) => { v.unit = e.target.value; touch(false); } },
    ["days", "hours"].map((unit) => h("option", { value: unit, selected: v.unit === unit },
      unit)))),
  ];
}

function choice(elId, label, values, current, described, onPick, keep = false) {
  const options = values.map((value) => h("option", { value, selected: value === current },
    value));
  if (!keep) options.unshift(h("option", { value: "", selected: !current }, "choose…"));
  return field(label, h("select", { id: elId, "aria-describedby": described, class: "value",
    onchange: (e) => onPick(e.target.value) }, options));
}

/** A group of checkboxes (a multi-select a keyboard and a phone both handle well). */
function checkboxes(elId, label, values, items, described, touch) {
  const pairs = values.map((value) => (Array.isArray(value) ? value : [value, value]));
  const boxes = pairs.map(([value, text], n) => {
    const boxId = `${elId}-${n}`;
    return h("label", { class: "check", for: boxId },
      h("input", { type: "checkbox", id: boxId, value, checked: items.includes(value),
        class: "value", onchange: (e) => {
          const at = items.indexOf(value);
          if (e.target.checked && at < 0) items.push(value);
          if (!e.target.checked && at >= 0) items.splice(at, 1);
          touch(false);
        } }), " ", text);
  });
  if (!boxes.length) boxes.push(h("span", { class: "muted" }, "none to choose from"));
  return h("fieldset", { class: "f checks", id: elId, "aria-describedby": described },
    h("legend", {}, label), boxes);
}

/** A tag input: type a value and press Enter or comma; each tag has a remove button;
 *  Backspace in the empty input removes the last tag; pasting "a, b" adds both. */
function tagField(elId, label, items, described, touch, ui, placeholder) {
  const list = h("ul", { class: "tags", "aria-label": `${label} added` });
  const input = h("input", { id: elId, class: "value tag-input", spellcheck: "false",
    placeholder: placeholder || "type, then Enter", "aria-describedby": `${elId}-help ${described}` });
  const redraw = () => {
    list.replaceChildren(...items.map((item, n) => h("li", { class: "tag" },
      h("span", {}, item),
      h("button", { type: "button", class: "tag-remove", "aria-label": `Remove ${item}`,
        onclick: () => { items.splice(n, 1); redraw(); touch(false); input.focus(); } }, "×"))));
  };
  const add = (text) => {
    let added = false;
    for (const part of text.split(/[,\n]/)) {
      const item = part.trim();
      if (item && !items.includes(item)) { items.push(item); added = true; }
    }
    if (added) { redraw(); touch(false); }
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === ",") {
      e.preventDefault();
      add(input.value);
      input.value = "";
    } else if (e.key === "Backspace" && input.value === "" && items.length) {
      const removed = items.pop();
      redraw();
      touch(false);
      ui.announce(`Removed ${removed}`);
    }
  });
  input.addEventListener("blur", () => { if (input.value.trim()) { add(input.value); input.value = ""; } });
  input.addEventListener("paste", (e) => {
    const pasted = e.clipboardData.getData("text");
    if (/[,\n]/.test(pasted)) { e.preventDefault(); add(pasted); }
  });
  redraw();
  return h("div", { class: "f tag-field" }, h("label", { for: elId }, label),
    h("div", { class: "tag-box" }, list, input),
    h("p", { class: "hint", id: `${elId}-help` }, "Enter or comma adds; Backspace removes the last"));
}
