// The page of `mask2former serve`: upload an image to /v1/segment, draw the class overlay
// from the returned label map, show the legend, the class under the pointer and the areas.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, file: null, result: null, labels: null, void: 255, colors: new Map(), names: new Map() };

function headers() {
  const key = sessionStorage.getItem("mask2former-api-key");
  return key ? { Authorization: "Bearer " + key } : {};
}

function setStatus(text, kind) {
  $("status").textContent = text;
  document.body.dataset.state = kind || document.body.dataset.state;
}

async function loadModel() {
  const res = await fetch("v1/model", { headers: headers() });
  if (res.status === 401) { $("auth").hidden = false; $("model-name").textContent = "API key needed"; return; }
  if (!res.ok) { setStatus("cannot read the model description (" + res.status + ")", "error"); return; }
  $("auth").hidden = true;
  const model = state.model = await res.json();
  const name = model.name.replace(/\/+$/, "").split("/").pop();
  const backbone = model.architecture.backbone.split(" (")[0].replace("-?", "");
  $("model-name").textContent = name + " · " + backbone + " · " +
    model.classes.length + " classes · " + model.precision.used;
  const select = $("task");
  select.innerHTML = "";
  for (const t of model.tasks) select.add(new Option(t, t, t === model.task, t === model.task));
  for (const c of model.classes) { state.colors.set(c.id, c.color); state.names.set(c.id, c.name); }
}

function decodeLabelMap(map) {
  const bytes = Uint8Array.from(atob(map.data), (ch) => ch.charCodeAt(0));
  state.void = map.void;
  return map.dtype === "uint16" ? new Uint16Array(bytes.buffer) : bytes;
}

function drawOverlay() {
  const { result, labels } = state;
  const { width, height } = result.image;
  const canvas = $("overlay");
  canvas.width = width; canvas.height = height;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(width, height);
  const px = img.data;
  for (let i = 0; i < labels.length; i++) {
    const id = labels[i];
    // class boundaries in white, as in overlay.png; void stays transparent
    const x = i % width;
    const edge = (x + 1 < width && labels[i + 1] !== id) || (i + width < labels.length && labels[i + width] !== id);
    if (id === state.void && !edge) continue;
    const c = edge ? [255, 255, 255] : (state.colors.get(id) || [0, 0, 0]);
    px[4 * i] = c[0]; px[4 * i + 1] = c[1]; px[4 * i + 2] = c[2]; px[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  applyOpacity();
  canvas.dataset.ready = "1";
}

function applyOpacity() {
  const v = Number($("opacity").value);
  $("opacity-value").textContent = v + " %";
  $("overlay").style.opacity = String(v / 100);
}

function swatch(color) {
  const s = document.createElement("span");
  s.className = "swatch";
  s.style.background = "rgb(" + color.join(",") + ")";
  return s;
}

function showTables() {
  const { result } = state;
  const legend = $("legend");
  legend.innerHTML = "";
  for (const c of result.classes) {
    if (c.id < 0) continue;
    const li = document.createElement("li");
    li.dataset.classId = c.id;
    li.append(swatch(c.color), document.createTextNode(c.name));
    legend.append(li);
  }
  const body = $("areas").querySelector("tbody");
  body.innerHTML = "";
  let pixels = 0, percent = 0;
  for (const c of result.classes) {
    const tr = document.createElement("tr");
    const name = document.createElement("td");
    name.append(swatch(c.color), document.createTextNode(c.name));
    const p = document.createElement("td"); p.className = "num"; p.textContent = c.pixels.toLocaleString("en-US");
    const q = document.createElement("td"); q.className = "num"; q.textContent = c.percent.toFixed(2);
    tr.append(name, p, q);
    body.append(tr);
    pixels += c.pixels; percent += c.percent;
  }
  $("total-pixels").textContent = pixels.toLocaleString("en-US");
  $("total-percent").textContent = percent.toFixed(2);
}

function setDownload(id, blob, name) {
  const a = $(id);
  if (a.href) URL.revokeObjectURL(a.href);
  a.href = URL.createObjectURL(blob);
  a.download = name;
  a.classList.remove("disabled");
}

function showDownloads() {
  const { result } = state;
  const png = Uint8Array.from(atob(result.labels_png), (ch) => ch.charCodeAt(0));
  setDownload("download-labels", new Blob([png], { type: "image/png" }), result.image.name + "_labels.png");
  const copy = Object.assign({}, result);
  delete copy.label_map; delete copy.labels_png;
  setDownload("download-json", new Blob([JSON.stringify(copy, null, 1)], { type: "application/json" }),
    result.image.name + "_" + result.task + ".json");
}

async function drawPhoto(file) {
  const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  const canvas = $("photo");
  canvas.width = bitmap.width; canvas.height = bitmap.height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  $("stage").hidden = false;
}

async function segment() {
  if (!state.file) return;
  const task = $("task").value;
  $("overlay").dataset.ready = "0";
  setStatus("segmenting " + state.file.name + " (" + task + ")…", "busy");
  const form = new FormData();
  form.append("image", state.file, state.file.name);
  const started = performance.now();
  let res;
  try {
    res = await fetch("v1/segment?label_map=true&task=" + encodeURIComponent(task),
      { method: "POST", body: form, headers: headers() });
  } catch (e) { setStatus("request failed: " + e, "error"); return; }
  const body = await res.json().catch(() => ({ error: "answer is not JSON" }));
  if (!res.ok) {
    if (res.status === 401) $("auth").hidden = false;
    setStatus("error " + res.status + ": " + (body.error || res.statusText), "error");
    return;
  }
  state.result = body;
  state.labels = decodeLabelMap(body.label_map);
  await drawPhoto(state.file);
  drawOverlay();
  showTables();
  showDownloads();
  const ms = Math.round(performance.now() - started);
  setStatus(body.image.name + ": " + body.image.width + "×" + body.image.height + ", " + body.task + ", " +
    body.classes.filter((c) => c.id >= 0).length + " classes present, " + ms + " ms", "done");
}

function pointAt(event) {
  if (!state.result) return;
  const canvas = $("overlay");
  const rect = canvas.getBoundingClientRect();
  const { width, height } = state.result.image;
  const x = Math.floor((event.clientX - rect.left) * width / rect.width);
  const y = Math.floor((event.clientY - rect.top) * height / rect.height);
  if (x < 0 || y < 0 || x >= width || y >= height) return;
  const id = state.labels[y * width + x];
  const name = id === state.void ? "(void)" : state.names.get(id);
  const pointer = $("pointer");
  pointer.textContent = "";
  if (id !== state.void) pointer.append(swatch(state.colors.get(id)), document.createTextNode(" "));
  pointer.append(document.createTextNode(name + "  (" + x + ", " + y + ")"));
  pointer.dataset.classId = id === state.void ? "-1" : String(id);
  for (const li of $("legend").children) li.classList.toggle("hover", Number(li.dataset.classId) === id);
}

function useFile(file) {
  if (!file) return;
  state.file = file;
  segment();
}

function wire() {
  $("file").addEventListener("change", (e) => useFile(e.target.files[0]));
  const drop = $("drop");
  for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); useFile(e.dataTransfer.files[0]); });
  $("task").addEventListener("change", segment);
  $("opacity").addEventListener("input", applyOpacity);
  $("overlay").addEventListener("mousemove", pointAt);
  $("api-key-save").addEventListener("click", async () => {
    sessionStorage.setItem("mask2former-api-key", $("api-key").value);
    await loadModel();
    segment();
  });
}

wire();
loadModel();
