// Building DOM nodes without HTML strings (no data ever goes through innerHTML), and small
// formatting helpers shared by the views.

/** h("p", {class: "hint"}, "text", child): an element with attributes, properties and children.
 *  `on*` keys add listeners; `null`/`false` attributes and children are skipped. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (["value", "checked", "selected", "disabled", "hidden"].includes(key)) {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace every child of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
/** A fresh id for label/aria wiring. */
export function newId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** Tell screen readers something happened (a polite live region in index.html). */
export function announce(text) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 30);
}

const numberFormat = new Intl.NumberFormat();
export function count(n) {
  return typeof n === "number" ? numberFormat.format(n) : "–";
}

/** "3 min ago", "in 2 days": a timestamp relative to now, for people. */
export function relative(iso) {
  if (!iso) return "never";
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return String(iso);
  const seconds = Math.round((at.getTime() - Date.now()) / 1000);
  const units = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size || unit === "second") {
      return rtf.format(Math.round(seconds / size), unit);
    }
  }
  return String(iso);
}

/** A <time> element showing a relative time, the exact one as its tooltip. */
export function timeEl(iso) {
  if (!iso) return h("span", {}, "never");
  const exact = new Date(iso);
  const title = Number.isNaN(exact.getTime()) ? String(iso) : exact.toLocaleString();
  return h("time", { datetime: iso, title }, relative(iso));
}

/** A condition value as a person reads it: lists joined, {"days": 30} as "30 days". */
export function valueText(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return value.map(valueText).join(", ");
  if (typeof value === "object") {
    const [[unit, amount] = []] = Object.entries(value);
    if ((unit === "days" || unit === "hours") && Object.keys(value).length === 1) {
      return `${amount} ${amount === 1 ? unit.slice(0, -1) : unit}`;
    }
    return JSON.stringify(value);
  }
  return String(value);
}

export const OPERATOR_LABELS = {
  eq: "is", neq: "is not", in: "is one of", not_in: "is none of",
  gt: "is more than", gte: "is at least", lt: "is less than", lte: "is at most",
  between: "is between", contains: "contains", starts_with: "starts with",
  ends_with: "ends with", exists: "is set", not_exists: "is not set",
  includes_any: "includes any of", includes_all: "includes all of",
  includes_none: "includes none of", within_last: "is within the last",
  not_within_last: "is not within the last", before: "is before", after: "is after",
};

/** "total_spent is more than 300", for explanations and summaries. */
export function conditionText(cond) {
  const op = OPERATOR_LABELS[cond.op] || cond.op;
  let text = `${cond.field} ${op}`;
  const value = valueText(cond.value);
  if (value) text += ` ${value}`;
  if (["before", "after"].includes(cond.op) && cond.value && typeof cond.value === "object") {
    text += " ago";
  }
  if (cond.within_days) text += ` (last ${cond.within_days} days)`;
  return text;
}

/** A view's heading, focusable so the router can move focus to it. */
export function heading(text, level = 2) {
  return h(`h${level}`, { tabindex: "-1", class: "view-title" }, text);
}
