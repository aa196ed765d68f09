// latentlab studio page: one slider per attribute direction, the search box, the units and the resets.
import { $, SLIDER_RANGE, hooks, state, studio } from "./common.js";

// ---- attribute sliders -------------------------------------------------------------------------------------------
export function buildSliders(directions) {
  const list = $("sliders");
  list.textContent = "";
  for (const dir of directions) {
    const li = document.createElement("li");
    li.className = "slider";
    li.dataset.attr = dir.name;
    li.dataset.sigma = dir.sigma == null ? "" : String(dir.sigma);
    // held-out balanced accuracy where the file has it (older files: plain probe accuracy)
    const acc =
      dir.probe_balanced_accuracy != null
        ? `balanced ${(100 * dir.probe_balanced_accuracy).toFixed(0)}%`
        : dir.probe_accuracy == null
          ? ""
          : `probe ${(100 * dir.probe_accuracy).toFixed(0)}%`;
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
      hooks.render(started);
    });
    input.addEventListener("dblclick", () => {
      setAlpha(dir.name, 0);
      hooks.render();
    });
    li.querySelector(".reset").addEventListener("click", () => {
      setAlpha(dir.name, 0);
      hooks.render();
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
  hooks.render();
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
  hooks.render();
}
$("units-file").addEventListener("click", () => setUnits("file"));
$("units-sigma").addEventListener("click", () => setUnits("sigma"));
