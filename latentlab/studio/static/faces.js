// latentlab studio page: faces (gallery, uploads, samples) and the mix.
import { $, api, clearMessage, hooks, showMessage, state } from "./common.js";

// ---- faces: gallery, uploads, samples ---------------------------------------------------------------------------
export function addThumb(container, id, src, label) {
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

export function selectFace(id, roundtrip = null) {
  state.face = id;
  for (const el of document.querySelectorAll(".thumb")) el.setAttribute("aria-pressed", String(el.dataset.face === id));
  const stamp = Date.now();
  $("input-img").src = `/api/face/${id}/input.png?v=${stamp}`;
  $("recon-img").src = `/api/face/${id}/reconstruction.png?v=${stamp}`;
  $("roundtrip").textContent = "";
  if (roundtrip) showRoundtrip(roundtrip, "");
  else measureRoundtrip(id);
  hooks.render();
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
  hooks.render();
});
$("mix-t").addEventListener("input", () => {
  const started = performance.now();
  state.mix.t = Number($("mix-t").value);
  $("mix-t-value").textContent = state.mix.t.toFixed(2);
  hooks.render(started);
});
$("mix-path").addEventListener("change", () => {
  state.mix.path = $("mix-path").value;
  hooks.render();
});
