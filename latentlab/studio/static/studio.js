// latentlab studio page: the live render, the reproduce command, display and export, and start-up.
import { $, api, clearMessage, hooks, showMessage, state, studio } from "./common.js";
import { addThumb, selectFace } from "./faces.js";
import { buildSliders } from "./sliders.js";

// ---- the request body that says everything about the current picture ----------------------------------------
function renderBody() {
  const edits = [];
  for (const [attr, alpha] of state.alphas) if (alpha !== 0) edits.push({ attr, alpha });
  const mix = state.mix.face ? { face: state.mix.face, t: state.mix.t, path: state.mix.path } : null;
  return { face: state.face, edits, units: state.units, mix };
}

function summary(body) {
  const parts = body.edits.map((e) => `${e.attr} ${e.alpha > 0 ? "+" : ""}${e.alpha.toFixed(2)}`);
  const units = body.units === "sigma" ? " σ" : "";
  let text = parts.length ? parts.join(", ") + units : "no edit";
  if (body.mix) text = `mix t=${body.mix.t.toFixed(2)} (${body.mix.path}) · ` + text;
  return text;
}

// ---- live render: abort the request in flight when a newer one starts ------------------------------------------
let inFlight = null;
let seq = 0;
let shownUrl = null;

async function render(startedAt = performance.now()) {
  if (!state.face) return;
  if (inFlight) {
    inFlight.abort();
    studio.aborted += 1;
  }
  const controller = new AbortController();
  inFlight = controller;
  const mine = ++seq;
  const body = renderBody();
  try {
    const response = await api("/api/render", { json: body, signal: controller.signal });
    const blob = await response.blob();
    if (mine !== seq) return;
    const url = URL.createObjectURL(blob);
    const img = $("view");
    img.src = url;
    await img.decode();
    if (mine !== seq) return;
    requestAnimationFrame(() => {
      const ms = performance.now() - startedAt;
      $("latency").textContent = `${Math.round(ms)} ms`;
      studio.renders.push({ seq: mine, ms, body });
    });
    if (shownUrl) URL.revokeObjectURL(shownUrl);
    shownUrl = url;
    $("download").href = url;
    $("download").setAttribute("aria-disabled", "false");
    $("download").download = `${state.face}.png`;
    $("edit-summary").textContent = summary(body);
    clearMessageIfRenderError();
    updateCommand(body);
  } catch (err) {
    if (err.name === "AbortError") return;
    if (mine === seq) showMessage(err.message);
    renderErrorShown = true;
  } finally {
    if (inFlight === controller) inFlight = null;
  }
}

let renderErrorShown = false;
function clearMessageIfRenderError() {
  if (renderErrorShown) clearMessage();
  renderErrorShown = false;
}

// ---- reproduce command -------------------------------------------------------------------------------------------
let commandController = null;
async function updateCommand(body) {
  if (commandController) commandController.abort();
  const controller = (commandController = new AbortController());
  try {
    const response = await api("/api/command", { json: body, signal: controller.signal });
    const data = await response.json();
    $("command").textContent = data.command || "no single command writes this picture";
    $("command-note").textContent = data.reason || "";
    $("copy").disabled = !data.command;
  } catch (err) {
    if (err.name !== "AbortError") $("command").textContent = err.message;
  }
}

$("copy").addEventListener("click", async () => {
  const text = $("command").textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    const range = document.createRange();
    range.selectNodeContents($("command"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    document.execCommand("copy");
  }
  $("copy").textContent = "Copied";
  setTimeout(() => ($("copy").textContent = "Copy"), 1200);
});

hooks.render = render;

// ---- display and export ------------------------------------------------------------------------------------------
function setScaling(mode) {
  for (const id of ["view", "input-img", "recon-img"]) {
    $(id).classList.toggle("pixelated", mode === "nearest");
    $(id).classList.toggle("smooth", mode === "smooth");
  }
  $("scale-nearest").setAttribute("aria-pressed", String(mode === "nearest"));
  $("scale-smooth").setAttribute("aria-pressed", String(mode === "smooth"));
}
$("scale-nearest").addEventListener("click", () => setScaling("nearest"));
$("scale-smooth").addEventListener("click", () => setScaling("smooth"));

$("export").addEventListener("click", async () => {
  if (!state.face) return showMessage("pick a face first");
  const format = $("sweep-format").value;
  const body = {
    ...renderBody(),
    attr: $("sweep-attr").value,
    sweep: [Number($("sweep-lo").value), Number($("sweep-hi").value), Math.round(Number($("sweep-n").value))],
    format,
  };
  $("export").disabled = true;
  $("export").textContent = "Rendering…";
  try {
    const response = await api("/api/export", { json: body });
    const blob = await response.blob();
    const match = /filename="?([^";]+)"?/.exec(response.headers.get("Content-Disposition") || "");
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = match ? match[1] : `${body.attr}_sweep.${format}`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (err) {
    showMessage(err.message);
  } finally {
    $("export").disabled = false;
    $("export").textContent = "Export sweep";
  }
});

// ---- start -------------------------------------------------------------------------------------------------------
async function start() {
  let info;
  try {
    info = state.info = studio.info = await (await api("/api/info")).json();
  } catch (err) {
    showMessage(`cannot reach the studio server: ${err.message}`);
    return;
  }
  const bpd = info.bits_per_dim == null ? "" : ` · ${info.bits_per_dim.toFixed(2)} bits/dim`;
  $("model-info").textContent = `${info.model} · ${info.image_size} px · ${info.latent_dim} dims${bpd}`;
  state.units = info.units && info.units.length ? info.units[0] : "file";
  buildSliders(info.directions);
  if (!info.has_directions) {
    $("no-directions").hidden = false;
    $("no-directions").textContent = info.hint || "No direction file: sampling and mixing still work.";
    $("export").disabled = true;
    $("units-row").hidden = $("search").hidden = true;
    document.querySelector(".sweep").hidden = true;
  }
  for (let i = 0; i < info.gallery; i++) addThumb($("gallery"), `g${i}`, `/api/gallery/${i}.png`, `face ${i}`);
  if (info.gallery > 0) selectFace("g0");
}
start();
