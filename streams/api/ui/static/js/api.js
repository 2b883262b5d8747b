// The API client of the page: every call carries the bearer token, which is asked for once per
// browser tab and kept in sessionStorage (never localStorage, never in the page source).

const TOKEN_KEY = "segstream.apiToken";

/** An answer that is not a success, with the API's error body `{code, message, details}`. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `the API answered ${status}`);
    this.status = status;
    this.code = error.code || "error";
    this.details = Array.isArray(error.details) ? error.details : [];
  }
}

export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

let pendingAsk = null;

/** Show the token dialog (one at a time, whoever asks) and resolve with what was typed. */
export function askForToken(reason) {
  if (pendingAsk) return pendingAsk;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const error = document.getElementById("token-error");
  error.hidden = !reason;
  error.textContent = reason || "";
  input.value = "";
  pendingAsk = new Promise((resolve) => {
    const submitted = (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) { input.focus(); return; }
      form.removeEventListener("submit", submitted);
      dialog.removeEventListener("cancel", refuseCancel);
      sessionStorage.setItem(TOKEN_KEY, token);
      dialog.close();
      pendingAsk = null;
      resolve(token);
    };
    form.addEventListener("submit", submitted);
    dialog.addEventListener("cancel", refuseCancel);
  });
  if (!dialog.open) dialog.showModal();
  input.focus();
  return pendingAsk;
}

function refuseCancel(event) {
  event.preventDefault(); // nothing on the page works without the token
}

/** Call the API: `api("POST", "/segments", body)` resolves with the parsed JSON answer or
 *  rejects with an ApiError. A refused token is asked for again and the call retried. */
export async function api(method, path, body) {
  let reason = null;
  for (let attempt = 0; attempt < 4; attempt += 1) {
    const token = storedToken() || await askForToken(reason);
    const response = await send(method, path, body, token);
    if (response.status === 401) {
      forgetToken();
      reason = "The API refused that token. Check SEGSTREAM_API_TOKEN and try again.";
      continue;
    }
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }
  throw new ApiError(401, { error: { code: "unauthorized", message: "no valid token" } });
}

async function send(method, path, body, token) {
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  try {
    return await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (cause) {
    throw new ApiError(0, { error: { code: "unreachable",
      message: `The API could not be reached (${cause.message}).` } });
  }
}

/** Cached GET /fields: the catalog does not change while the page is open. */
let fieldsPromise = null;
export function fields() {
  if (!fieldsPromise) {
    fieldsPromise = api("GET", "/fields").then((answer) => answer.fields)
      .catch((error) => { fieldsPromise = null; throw error; });
  }
  return fieldsPromise;
}
