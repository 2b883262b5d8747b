// The page's router: `#/segments`, `#/builder[/ID]`, `#/providers`, `#/customers[/ID]`.
// Each view module exports `render(main, param)` and may return a function that stops what it
// started (polling), called when the view is left.

import { askForToken, forgetToken, storedToken } from "./api.js";
import * as builder from "./builder.js";
import * as customers from "./customers.js";
import * as providers from "./providers.js";
import * as segments from "./segments.js";

const VIEWS = {
  segments: { module: segments, title: "Segment lists" },
  builder: { module: builder, title: "Segment builder" },
  providers: { module: providers, title: "Providers" },
  customers: { module: customers, title: "Customer lookup" },
};

let leave = null;
let generation = 0;
let routedOnce = false; // the first view keeps focus where the browser put it

function parseHash() {
  const [, name = "segments", ...rest] = location.hash.split("/");
  const view = VIEWS[name] ? name : "segments";
  const param = rest.length ? decodeURIComponent(rest.join("/")) : null;
  return { view, param };
}

async function route() {
  const { view, param } = parseHash();
  generation += 1;
  const mine = generation;
  if (leave) leave();
  leave = null;
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    const current = link.dataset.view === view && !(view === "builder" && param);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const main = document.getElementById("main");
  main.replaceChildren();
  document.title = `${VIEWS[view].title} · segstream`;
  const stop = await VIEWS[view].module.render(main, param);
  if (mine !== generation) {
    if (stop) stop(); // the user moved on while this view was loading
    return;
  }
  leave = stop || null;
  const title = main.querySelector(".view-title");
  if (title && routedOnce) title.focus({ preventScroll: false });
  routedOnce = true;
}

document.getElementById("forget-token").addEventListener("click", () => {
  forgetToken();
  askForToken("Token forgotten. Enter it again to go on.");
});

window.addEventListener("hashchange", route);
// A link to the view already shown starts it afresh (say, "New segment" from the builder).
document.querySelector("nav").addEventListener("click", (event) => {
  const link = event.target.closest("a[href^='#']");
  if (link && link.getAttribute("href") === location.hash) route();
});

if (!storedToken()) askForToken(null);
route();
