// latentlab studio page: every request carries the whole state (face, edits, units, mix); the server keeps none.
"use strict";

const $ = (id) => document.getElementById(id);
const SLIDER_RANGE = { min: -3, max: 3, step: 0.05 };

const state = {
  info: null,
  face: null,        // face id: "g<i>", "u<hash>" or "s<seed>t<temperature>"
  alphas: new Map(), // attribute -> alpha (only non-zero ones are sent)
  units: "file",
  mix: { face: "", t: 0.5, path: "slerp" },
  labels: new Map(), // face id -> label shown in the mix list
};

// Read by the browser test and the latency benchmark: one entry per picture shown.
const studio = (window.studio = { renders: [], aborted: 0, lastInput: 0, info: null });

// ---- messages: one area, the latest message replaces the previous one --------------------------------------
function showMessage(text, kind = "error") {
  $("message-text").textContent = text;
  $("message").className = kind === "error" ? "message" : "message info";
  $("message").hidden = false;
}
function clearMessage() {
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

async function api(path, options = {}) {
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

// ---- faces: gallery, uploads, samples ---------------------------------------------------------------------------
function addThumb(container, id, src, label) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "thumb";
  button.dataset.face = id;
  button.title = label;
  button.setAttribute("aria-pressed", "false");
  const img = document.createElement("img");
  img.loading = "lazy";
  img.src = src;
  img.alt = label;
  button.append(img);
  button.addEventListener("click", () => selectFace(id));
  container.append(button);
  state.labels.set(id, label);
  const option = document.createElement("option");
  option.value = id;
  option.textContent = label;
  $("mix-face").append(option);
}

function selectFace(id, roundtrip = null) {
  state.face = id;
  for (const el of document.querySelectorAll(".thumb")) el.setAttribute("aria-pressed", String(el.dataset.face === id));
  const stamp = Date.now();
  $("input-img").src = `/api/face/${id}/input.png?v=${stamp}`;
  $("recon-img").src = `/api/face/${id}/reconstruction.png?v=${stamp}`;
  $("roundtrip").textContent = "";
  if (roundtrip) showRoundtrip(roundtrip, "");
  else measureRoundtrip(id);
  render();
}

function showRoundtrip({ psnr, max_error }, note) {
  $("roundtrip").textContent = Number.isFinite(psnr)
    ? `round trip: PSNR ${psnr.toFixed(1)} dB, max error ${max_error.toFixed(4)}${note}`
    : `round trip: exact, PSNR ∞, max error 0${note}`;
}

// PSNR and max error between the two 8-bit PNGs, for faces whose error the server did not report.
async function measureRoundtrip(id) {
  const load = (src) =>
    new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = reject;
      img.src = src;
    });
  try {
    const [a, b] = await Promise.all([load($("input-img").src), load($("recon-img").src)]);
    if (state.face !== id) return;
    const pixels = (img) => {
      const canvas = document.createElement("canvas");
      canvas.width = img.naturalWidth;
      canvas.height = img.naturalHeight;
      const ctx = canvas.getContext("2d");
      ctx.drawImage(img, 0, 0);
      return ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    };
    const pa = pixels(a);
    const pb = pixels(b);
    let sq = 0;
    let max = 0;
    let n = 0;
    for (let i = 0; i < pa.length; i += 4) {
      for (let c = 0; c < 3; c++) {
        const d = Math.abs(pa[i + c] - pb[i + c]) / 255;
        sq += d * d;
        max = Math.max(max, d);
        n += 1;
      }
    }
    const mse = sq / n;
    showRoundtrip({ psnr: mse === 0 ? Infinity : -10 * Math.log10(mse), max_error: max }, " (8-bit images)");
  } catch (_) {
    /* the images report their own failure */
  }
}

async function upload(file) {
  if (!file) return;
  const form = new FormData();
  form.append("file", file, file.name);
  $("drop").classList.add("busy");
  try {
    const data = await (await api("/api/upload", { method: "POST", body: form })).json();
    if (!state.labels.has(data.id)) addThumb($("uploads"), data.id, `/api/face/${data.id}/input.png`, data.name);
    clearMessage();
    selectFace(data.id, data);
  } catch (err) {
    showMessage(err.message.includes(file.name) ? err.message : `${file.name}: ${err.message}`);
  } finally {
    $("drop").classList.remove("busy");
    $("file").value = "";
  }
}

$("file").addEventListener("change", (e) => upload(e.target.files[0]));
const drop = $("drop");
for (const type of ["dragenter", "dragover"])
  drop.addEventListener(type, (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  e.stopPropagation();
  upload(e.dataTransfer.files[0]);
});
// A photo dropped anywhere else on the page is uploaded too, instead of the browser navigating to it.
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => {
  e.preventDefault();
  if (e.dataTransfer && e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
});

async function sample(seed) {
  const temperature = Number($("temperature").value);
  $("seed").value = String(seed);
  try {
    const data = await (await api("/api/sample", { json: { temperature, seed } })).json();
    if (!state.labels.has(data.id))
      addThumb($("samples"), data.id, `/api/face/${data.id}/input.png`, `sample ${seed} at T=${temperature}`);
    clearMessage();
    selectFace(data.id);
  } catch (err) {
    showMessage(err.message);
  }
}
$("temperature").addEventListener("input", () => {
  $("temperature-value").textContent = Number($("temperature").value).toFixed(2);
});
$("sample-seed").addEventListener("click", () => sample(Math.max(0, Math.floor(Number($("seed").value) || 0))));
$("sample-new").addEventListener("click", () => sample(Math.floor(Math.random() * 1e6)));

// ---- mix ---------------------------------------------------------------------------------------------------------
$("mix-face").addEventListener("change", () => {
  state.mix.face = $("mix-face").value;
  $("mix-t").disabled = $("mix-path").disabled = !state.mix.face;
  render();
});
$("mix-t").addEventListener("input", () => {
  const started = performance.now();
  state.mix.t = Number($("mix-t").value);
  $("mix-t-value").textContent = state.mix.t.toFixed(2);
  render(started);
});
$("mix-path").addEventListener("change", () => {
  state.mix.path = $("mix-path").value;
  render();
});

// ---- attribute sliders -------------------------------------------------------------------------------------------
function buildSliders(directions) {
  const list = $("sliders");
  list.textContent = "";
  for (const dir of directions) {
    const li = document.createElement("li");
    li.className = "slider";
    li.dataset.attr = dir.name;
    li.dataset.sigma = dir.sigma == null ? "" : String(dir.sigma);
    const acc = dir.probe_accuracy == null ? "" : `probe ${(100 * dir.probe_accuracy).toFixed(0)}%`;
    li.innerHTML = `
      <div class="head">
        <label class="name"></label>
        <span class="acc"></span>
        <button type="button" class="reset" title="Reset">reset</button>
      </div>
      <div class="body">
        <input type="range">
        <output>0.00</output>
      </div>`;
    const input = li.querySelector("input");
    const id = `alpha-${dir.name}`;
    input.id = id;
    Object.assign(input, SLIDER_RANGE, { value: "0" });
    input.setAttribute("aria-label", dir.name);
    li.querySelector(".name").textContent = dir.name.replace(/_/g, " ");
    li.querySelector(".name").htmlFor = id;
    li.querySelector(".name").title = dir.name;
    li.querySelector(".acc").textContent = acc;
    input.addEventListener("input", () => {
      const started = performance.now();
      studio.lastInput = started;
      setAlpha(dir.name, Number(input.value));
      $("sweep-attr").value = dir.name; // the sweep exports the attribute moved last
      render(started);
    });
    input.addEventListener("dblclick", () => {
      setAlpha(dir.name, 0);
      render();
    });
    li.querySelector(".reset").addEventListener("click", () => {
      setAlpha(dir.name, 0);
      render();
    });
    list.append(li);
    const option = document.createElement("option");
    option.value = option.textContent = dir.name;
    $("sweep-attr").append(option);
  }
}

function sliderOf(attr) {
  return document.querySelector(`.slider[data-attr="${CSS.escape(attr)}"]`);
}

function setAlpha(attr, alpha) {
  if (alpha === 0) state.alphas.delete(attr);
  else state.alphas.set(attr, alpha);
  const li = sliderOf(attr);
  li.querySelector("input").value = String(alpha);
  li.querySelector("output").textContent = (alpha > 0 ? "+" : "") + alpha.toFixed(2);
  li.classList.toggle("edited", alpha !== 0);
  const count = state.alphas.size;
  $("edit-count").hidden = count === 0;
  $("edit-count").textContent = `${count} edited`;
}

$("reset-all").addEventListener("click", () => {
  for (const attr of [...state.alphas.keys()]) setAlpha(attr, 0);
  render();
});

$("search").addEventListener("input", () => {
  const words = $("search").value.toLowerCase().replace(/_/g, " ").split(/\s+/).filter(Boolean);
  for (const li of document.querySelectorAll(".slider")) {
    const name = li.dataset.attr.toLowerCase().replace(/_/g, " ");
    li.hidden = !words.every((w) => name.includes(w));
  }
});

// Sigma units need each direction's spread; a direction without one cannot be moved in sigma units.
function setUnits(units) {
  state.units = units;
  $("units-file").setAttribute("aria-pressed", String(units === "file"));
  $("units-sigma").setAttribute("aria-pressed", String(units === "sigma"));
  for (const li of document.querySelectorAll(".slider")) {
    const off = units === "sigma" && li.dataset.sigma === "";
    li.classList.toggle("disabled", off);
    li.querySelector("input").disabled = off;
    if (off && state.alphas.has(li.dataset.attr)) setAlpha(li.dataset.attr, 0);
  }
  render();
}
$("units-file").addEventListener("click", () => setUnits("file"));
$("units-sigma").addEventListener("click", () => setUnits("sigma"));

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
  }
  for (let i = 0; i < info.gallery; i++) addThumb($("gallery"), `g${i}`, `/api/gallery/${i}.png`, `face ${i}`);
  if (info.gallery > 0) selectFace("g0");
}
start();
