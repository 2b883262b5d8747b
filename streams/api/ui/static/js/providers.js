// Providers (settings): the auto-responder profiles with their masked credential hint and the
// lists of their last sync; "Sync lists now"; a form adding a profile, which the API creates
// only once the provider accepted the credentials.

import { api } from "./api.js";
import { announce, count, fill, h, heading, timeEl } from "./dom.js";
import { PROVIDER_NAMES, hintText, listsOf, loadProfiles, syncLists } from "./profiles.js";

// Credential fields per provider (contract section 6); `secret` ones are password inputs.
const CREDENTIALS = {
  mailchimp: {
    api_key: [{ name: "api_key", label: "API key", secret: true,
      hint: "ends with the data centre, e.g. …-us21" }],
    oauth: [
      { name: "access_token", label: "OAuth access token", secret: true },
      { name: "dc", label: "Data centre", hint: "e.g. us21" },
    ],
  },
  activecampaign: {
    api_key: [
      { name: "api_url", label: "API URL", type: "url",
        hint: "https://<account>.api-us1.com" },
      { name: "api_key", label: "API key", secret: true },
    ],
  },
  sendlane: { api_key: [{ name: "api_token", label: "API token", secret: true }] },
};

export async function render(main) {
  const list = h("div", { class: "profiles", id: "profiles" }, "Loading…");
  const listError = h("p", { class: "error", role: "alert", hidden: true });
  main.append(
    h("div", { class: "view-head" }, heading("Providers")),
    h("p", { class: "hint" }, "Auto-responder accounts segments can keep their members in. "
      + "Credentials are stored encrypted and never shown again, only a masked hint."),
    h("section", { "aria-labelledby": "profiles-title" },
      h("h3", { id: "profiles-title" }, "Profiles"), listError, list),
    addProfileForm(() => refresh()));

  async function refresh() {
    try {
      const profiles = await loadProfiles();
      fill(list, profiles.length ? profiles.map((p) => profileCard(p, refresh))
        : h("p", { class: "empty" }, "No profiles yet: add one below."));
      listError.hidden = true;
    } catch (e) {
      listError.hidden = false;
      listError.textContent = `Could not load the profiles: ${e.message}`;
    }
  }
  await refresh();
  return null;
}

function profileCard(profile, refresh) {
  const lists = h("div", { class: "profile-lists" });
  const state = h("p", { class: "sync-state", role: "status" });
  const syncButton = h("button", { type: "button", class: "small",
    "aria-label": `Sync lists of ${profile.name} now` }, "Sync lists now");
  const drawState = () => fill(state, profile.synced_at
    ? [`${count(profile.list_count)} lists, synced `, timeEl(profile.synced_at)]
    : "Lists never synced");
  syncButton.addEventListener("click", async () => {
    syncButton.disabled = true;
    fill(state, "Syncing…");
    try {
      const answer = await syncLists(profile.id);
      profile.synced_at = answer.synced_at;
      profile.list_count = answer.lists.length;
      drawState();
      drawLists(lists, answer.lists);
      announce(`${profile.name}: ${answer.lists.length} lists synced`);
    } catch (e) {
      fill(state, h("span", { class: "error" }, `Sync failed: ${e.message}`));
    } finally {
      syncButton.disabled = false;
    }
  });
  drawState();
  if (profile.synced_at) {
    listsOf(profile).then((found) => drawLists(lists, found)).catch(() => {});
  }
  return h("article", { class: "profile card", dataset: { profileId: profile.id } },
    h("h4", {}, profile.name),
    h("dl", { class: "facts" },
      h("div", {}, h("dt", {}, "Provider"), h("dd", {},
        PROVIDER_NAMES[profile.provider] || profile.provider)),
      h("div", {}, h("dt", {}, "Credentials"), h("dd", {}, h("code", { class: "hint-mask" },
        hintText(profile.hint)))),
      profile.base_url ? h("div", {}, h("dt", {}, "API root"), h("dd", {},
        h("code", {}, profile.base_url))) : null,
      h("div", {}, h("dt", {}, "Added"), h("dd", {}, timeEl(profile.created_at)))),
    h("div", { class: "row-actions" }, syncButton, state),
    lists);
}

function drawLists(el, lists) {
  if (!lists.length) { fill(el, h("p", { class: "muted" }, "The provider has no lists.")); return; }
  fill(el, h("details", {}, h("summary", {}, `Lists (${lists.length})`),
    h("ul", { class: "list-tree" }, lists.map((list) => h("li", {},
      h("strong", {}, list.name), " ",
      h("span", { class: "muted" }, `${count(list.member_count)} members · id ${list.id}`),
      list.segments && list.segments.length ? h("ul", {}, list.segments.map((s) => h("li", {},
        s.name, " ", h("span", { class: "muted" }, `(${s.type || "segment"}, id ${s.id})`))))
        : null)))));
}

function addProfileForm(onAdded) {
  const nameInput = h("input", { id: "profile-name", autocomplete: "off", required: true,
    "aria-describedby": "profile-name-error" });
  const provider = h("select", { id: "profile-provider" }, Object.entries(PROVIDER_NAMES)
    .map(([value, label]) => h("option", { value }, label)));
  const mode = h("select", { id: "profile-auth" },
    h("option", { value: "api_key" }, "API key"),
    h("option", { value: "oauth" }, "OAuth access token"));
  const modeField = h("div", { class: "f" }, h("label", { for: "profile-auth" }, "Sign in with"),
    mode);
  const credentials = h("div", { class: "credential-fields" });
  const baseUrl = h("input", { id: "profile-base-url", type: "url", autocomplete: "off",
    spellcheck: "false", placeholder: "http://127.0.0.1:8999/3.0",
    "aria-describedby": "profile-base-url-hint profile-base_url-error" });
  const summary = h("p", { class: "error", role: "alert", hidden: true, id: "profile-error",
    tabindex: "-1" });
  const done = h("p", { class: "saved", role: "status", id: "profile-added" });
  const submit = h("button", { type: "submit", class: "primary" }, "Add and test credentials");

  const drawCredentials = () => {
    const fieldsOf = CREDENTIALS[provider.value];
    modeField.hidden = !fieldsOf.oauth;
    if (!fieldsOf[mode.value]) mode.value = "api_key";
    fill(credentials, fieldsOf[mode.value].map((f) => h("div", { class: "f" },
      h("label", { for: `cred-${f.name}` }, f.label),
      h("input", { id: `cred-${f.name}`, name: f.name, required: true,
        type: f.secret ? "password" : f.type || "text", autocomplete: "off",
        spellcheck: "false", "aria-describedby": `cred-${f.name}-hint profile-credentials.${f.name}-error` }),
      h("p", { class: "hint", id: `cred-${f.name}-hint` }, f.hint || ""),
      h("p", { class: "error", id: `profile-credentials.${f.name}-error`, hidden: true }))));
  };
  provider.addEventListener("change", drawCredentials);
  mode.addEventListener("change", drawCredentials);
  drawCredentials();

  const form = h("form", { id: "profile-form", novalidate: true },
    h("h3", { id: "add-profile-title" }, "Add a profile"),
    summary,
    h("div", { class: "f" }, h("label", { for: "profile-name" }, "Name"), nameInput,
      h("p", { class: "error", id: "profile-name-error", hidden: true })),
    h("div", { class: "f" }, h("label", { for: "profile-provider" }, "Provider"), provider,
      h("p", { class: "error", id: "profile-provider-error", hidden: true })),
    modeField,
    h("fieldset", { class: "credentials", "aria-describedby": "profile-credentials-error" },
      h("legend", {}, "Credentials"), credentials,
      h("p", { class: "error", id: "profile-credentials-error", hidden: true })),
    h("details", { class: "advanced" }, h("summary", {}, "Advanced"),
      h("div", { class: "f" }, h("label", { for: "profile-base-url" }, "API root (optional)"),
        baseUrl,
        h("p", { class: "hint", id: "profile-base-url-hint" }, "Replaces the provider's API "
          + "root, e.g. for a local Mailchimp-compatible server."),
        h("p", { class: "error", id: "profile-base_url-error", hidden: true }))),
    h("div", { class: "actions" }, submit, done));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form, summary);
    const body = { name: nameInput.value.trim(), provider: provider.value, credentials: {} };
    for (const input of credentials.querySelectorAll("input")) {
      body.credentials[input.name] = input.value.trim();
    }
    if (baseUrl.value.trim()) body.base_url = baseUrl.value.trim();
    submit.disabled = true;
    done.textContent = "Checking the credentials with the provider…";
    try {
      const profile = await api("POST", "/providers/profiles", body);
      form.reset();
      drawCredentials();
      done.textContent = `Added “${profile.name}”: the provider accepted the credentials `
        + `(${hintText(profile.hint)}). Sync its lists to use them in a segment.`;
      await onAdded();
    } catch (e) {
      done.textContent = "";
      showProfileErrors(form, summary, e);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function clearErrors(form, summary) {
  summary.hidden = true;
  for (const el of form.querySelectorAll(".error")) { el.hidden = true; el.textContent = ""; }
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

/** The API's message, and each detail beside the input its path names (`name`, `provider`,
 *  `credentials`, `credentials.api_key`, `base_url`). */
function showProfileErrors(form, summary, error) {
  summary.hidden = false;
  summary.textContent = error.message;
  let first = null;
  for (const detail of error.details) {
    const path = detail.path || "";
    const slot = form.querySelector(`[id="profile-${path}-error"]`)
      || (path.startsWith("credentials") ? form.querySelector("#profile-credentials-error")
        : null);
    if (slot) {
      slot.hidden = false;
      slot.textContent = detail.message;
      slot.closest("details")?.setAttribute("open", "");
    } else {
      summary.textContent += ` ${path ? `${path}: ` : ""}${detail.message}`;
    }
    for (const input of inputsFor(form, path)) {
      input.setAttribute("aria-invalid", "true");
      first = first || input;
    }
  }
  (first || summary).focus();
}

function inputsFor(form, path) {
  const single = { name: "#profile-name", provider: "#profile-provider",
    base_url: "#profile-base-url" }[path];
  if (single) return [form.querySelector(single)];
  if (path === "credentials") return [...form.querySelectorAll(".credential-fields input")];
  if (path.startsWith("credentials.")) {
    return [form.querySelector(`[id="cred-${path.slice("credentials.".length)}"]`)]
      .filter(Boolean);
  }
  return [];
}
