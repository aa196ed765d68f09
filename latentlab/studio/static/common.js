// latentlab studio page, shared parts: the page's state, the message area and the API client.
// Every request carries the whole state (face, edits, units, mix); the server keeps none.

export const $ = (id) => document.getElementById(id);
export const SLIDER_RANGE = { min: -3, max: 3, step: 0.05 };

export const state = {
  info: null,
  face: null,        // face id: "g<i>", "u<hash>" or "s<seed>t<temperature>"
  alphas: new Map(), // attribute -> alpha (only non-zero ones are sent)
  units: "file",
  mix: { face: "", t: 0.5, path: "slerp" },
  labels: new Map(), // face id -> label shown in the mix list
};

// Read by the browser test and the latency benchmark: one entry per picture shown.
export const studio = (window.studio = { renders: [], aborted: 0, lastInput: 0, info: null });

// The live render, set by studio.js: the face and slider modules ask for a new picture through it.
export const hooks = { render: (_startedAt) => {} };

// ---- messages: one area, the latest message replaces the previous one --------------------------------------
export function showMessage(text, kind = "error") {
  $("message-text").textContent = text;
  $("message").className = kind === "error" ? "message" : "message info";
  $("message").hidden = false;
}
export function clearMessage() {
  $("message").hidden = true;
}
$("message-close").addEventListener("click", clearMessage);

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") return body.error;
    if (body && body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (_) {
    /* not JSON */
  }
  return `${response.status} ${response.statusText || "error"}`;
}

export async function api(path, options = {}) {
  const init = { ...options };
  if (options.json !== undefined) {
    init.method = init.method || "POST";
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(options.json);
    delete init.json;
  }
  const response = await fetch(path, init);
  if (!response.ok) throw new Error(await errorText(response));
  return response;
}
