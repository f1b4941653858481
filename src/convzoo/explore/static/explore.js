// convzoo explore: the page's behaviour. Talks only to its own server (/api/...); no inline script.
"use strict";

const $ = (id) => document.getElementById(id);
let INFO = null;

function status(text, isError) {
  const el = $("status");
  el.textContent = text || "";
  el.className = isError ? "error" : "";
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error((body && body.error) || response.statusText);
  return body;
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// Only the newest answer is shown; one request at a time, the latest waiting one sent next.
function latest(send, show) {
  let busy = false, waiting = null;
  const run = async (args) => {
    busy = true;
    try { show(await send(...args)); status(""); } catch (err) { status(err.message, true); }
    busy = false;
    if (waiting) { const next = waiting; waiting = null; run(next); }
  };
  return (...args) => { if (busy) waiting = args; else run(args); };
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("data-")) node.setAttribute(k, v); else node[k] = v;
  }
  for (const child of children) node.append(child);
  return node;
}

function fmt(v) {
  const r = Math.round(v * 1000) / 1000;
  return Object.is(r, -0) ? "0" : String(r);
}

// ---------------------------------------------------------------- the operations
const ops = { input: [], kernel: [], selected: null, answer: null };

function num(id) { return parseInt($(id).value, 10) || 0; }

function clampControls() {
  const L = INFO.limits;
  const bound = (id, lo, hi) => { const v = Math.min(hi, Math.max(lo, num(id))); $(id).value = v; return v; };
  return {
    h: bound("in-h", 1, L.side), w: bound("in-w", 1, L.side), c: bound("in-c", 1, L.channels),
    kh: bound("k-h", 1, L.kernel), kw: bound("k-w", 1, L.kernel), o: bound("out-c", 1, L.channels),
    padding: bound("padding", 0, L.padding), stride: bound("stride", 1, L.stride),
    dilation: bound("dilation", 1, L.dilation),
    pool: { mode: $("pool-mode").value, size: bound("pool-size", 1, L.pool), stride: bound("pool-stride", 1, L.pool) },
  };
}

// Resize a nested array to `shape`, keeping the values that fit and filling with `fill`.
function reshape(values, shape, fill) {
  if (shape.length === 0) return typeof values === "number" ? values : fill();
  const out = [];
  for (let i = 0; i < shape[0]; i++) out.push(reshape(Array.isArray(values) ? values[i] : undefined, shape.slice(1), fill));
  return out;
}

function editableGrid(values, caption, onEdit, padding, kind) {
  const table = el("table", { class: "grid " + kind });
  table.append(el("caption", {}, caption));
  const h = values.length, w = values[0].length;
  for (let i = -padding; i < h + padding; i++) {
    const tr = el("tr");
    for (let j = -padding; j < w + padding; j++) {
      const inside = i >= 0 && i < h && j >= 0 && j < w;
      const td = el("td", { class: inside ? "" : "pad", "data-row": i, "data-col": j });
      if (inside) {
        const input = el("input", { type: "number", step: "any", value: values[i][j] });
        input.setAttribute("aria-label", `${caption} row ${i} column ${j}`);
        input.addEventListener("input", () => { const v = parseFloat(input.value); values[i][j] = isFinite(v) ? v : 0; onEdit(); });
        td.append(input);
      } else td.textContent = "0";
      tr.append(td);
    }
    table.append(tr);
  }
  return table;
}

function valueGrid(values, caption, kind, onPick) {
  const table = el("table", { class: "grid " + kind });
  table.append(el("caption", {}, caption));
  values.forEach((row, i) => {
    const tr = el("tr");
    row.forEach((v, j) => {
      const td = el("td", { "data-row": i, "data-col": j, "data-value": v, textContent: fmt(v) });
      if (onPick) td.addEventListener("click", () => onPick(i, j, td));
      tr.append(td);
    });
    table.append(tr);
  });
  return table;
}

function drawOpsInputs() {
  const p = clampControls();
  const box = $("ops-input"); box.replaceChildren();
  ops.input.forEach((channel, c) => box.append(editableGrid(channel, `channel ${c}`, sendOps, p.padding, "input")));
  const kbox = $("ops-kernel"); kbox.replaceChildren();
  ops.kernel.forEach((perIn, o) => perIn.forEach((k, c) =>
    kbox.append(editableGrid(k, `out ${o} \u2190 in ${c}`, sendOps, 0, "kernel"))));
}

function rebuildOps() {
  const p = clampControls();
  ops.input = reshape(ops.input, [p.c, p.h, p.w], () => 0);
  ops.kernel = reshape(ops.kernel, [p.o, p.c, p.kh, p.kw], () => 0);
  ops.selected = null;
  drawOpsInputs();
  sendOps();
}

function opsRequest() {
  const p = clampControls();
  return { input: ops.input, kernel: ops.kernel, padding: p.padding, stride: p.stride, dilation: p.dilation, pool: p.pool };
}

function highlightWindow() {
  document.querySelectorAll("#ops-input td.window").forEach((td) => td.classList.remove("window"));
  document.querySelectorAll("#ops-output td.selected").forEach((td) => td.classList.remove("selected"));
  const sel = ops.selected, a = ops.answer;
  $("ops-sum").textContent = "";
  if (!sel || !a) return;
  const [C, kh, kw] = [a.shape.input[0], a.shape.kernel[2], a.shape.kernel[3]];
  const [H, W] = [a.shape.output[1], a.shape.output[2]];
  if (sel.o >= a.shape.output[0] || sel.i >= H || sel.j >= W) { ops.selected = null; return; }
  const p = clampControls();
  const tables = document.querySelectorAll("#ops-input table");
  for (let c = 0; c < C; c++) {
    for (let u = 0; u < kh; u++) for (let v = 0; v < kw; v++) {
      const row = sel.i * p.stride - p.padding + u * p.dilation, col = sel.j * p.stride - p.padding + v * p.dilation;
      const td = tables[c] && tables[c].querySelector(`td[data-row="${row}"][data-col="${col}"]`);
      if (td) td.classList.add("window");
    }
  }
  const out = document.querySelectorAll("#ops-output table")[sel.o];
  const cell = out && out.querySelector(`td[data-row="${sel.i}"][data-col="${sel.j}"]`);
  if (cell) cell.classList.add("selected");
  const terms = a.partials[sel.o].map((ch) => fmt(ch[sel.i][sel.j]));
  const total = fmt(a.output[sel.o][sel.i][sel.j]);
  $("ops-sum").textContent = C > 1
    ? `output ${sel.o} at (${sel.i}, ${sel.j}) = ${terms.join(" + ")} (one term per input channel) = ${total}`
    : `output ${sel.o} at (${sel.i}, ${sel.j}) = \u03a3 window \u00d7 kernel = ${total}`;
}

function showOps(a) {
  ops.answer = a;
  $("ops-formula").replaceChildren(...a.formula.map((f) => el("li", {}, f)));
  const box = $("ops-output"); box.replaceChildren();
  a.output.forEach((channel, o) => box.append(valueGrid(channel, `output channel ${o} (${channel.length}\u00d7${channel[0].length})`,
    "output", (i, j) => { ops.selected = { o, i, j }; highlightWindow(); })));
  $("ops-pool-box").hidden = !a.pooled;
  if (a.pooled) {
    $("ops-pool-formula").replaceChildren(...a.pool_formula.map((f) => el("li", {}, f)));
    $("ops-pooled").replaceChildren(...a.pooled.map((ch, o) => valueGrid(ch, `pooled channel ${o}`, "pooled")));
  }
  highlightWindow();
}

const sendOps = debounce(latest(() => api("/api/ops", {
  method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(opsRequest()),
}), showOps), 80);

function preset(p) {
  $("in-c").value = p.input.length; $("in-h").value = p.input[0].length; $("in-w").value = p.input[0][0].length;
  $("out-c").value = p.kernel.length; $("k-h").value = p.kernel[0][0].length; $("k-w").value = p.kernel[0][0][0].length;
  $("padding").value = p.padding; $("stride").value = p.stride; $("dilation").value = p.dilation;
  $("pool-mode").value = (p.pool && p.pool.mode) || "none";
  ops.input = p.input; ops.kernel = p.kernel;
  rebuildOps();
}

function randomGrid(shape) { return reshape(null, shape, () => Math.floor(Math.random() * 7) - 3); }

function setupOps() {
  ["in-h", "in-w", "in-c", "k-h", "k-w", "out-c"].forEach((id) => $(id).addEventListener("change", rebuildOps));
  ["padding", "stride", "dilation"].forEach((id) => $(id).addEventListener("change", () => { drawOpsInputs(); sendOps(); }));
  ["pool-mode", "pool-size", "pool-stride"].forEach((id) => $(id).addEventListener("change", sendOps));
  $("preset-edge").addEventListener("click", () => preset(INFO.edge_example));
  $("preset-multi").addEventListener("click", () => preset({   // D2L 7.4.1: two channels, 3x3 input, 2x2 kernels
    input: [[[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[1, 2, 3], [4, 5, 6], [7, 8, 9]]],
    kernel: [[[[0, 1], [2, 3]], [[1, 2], [3, 4]]]], padding: 0, stride: 1, dilation: 1 }));
  $("preset-1x1").addEventListener("click", () => preset({
    input: randomGrid([3, 3, 3]), kernel: randomGrid([2, 3, 1, 1]), padding: 0, stride: 1, dilation: 1 }));
  $("preset-random").addEventListener("click", () => {
    const p = clampControls();
    ops.input = randomGrid([p.c, p.h, p.w]); ops.kernel = randomGrid([p.o, p.c, p.kh, p.kw]); rebuildOps();
  });
  preset(INFO.edge_example);
}

// ---------------------------------------------------------------- inside a run
function bytesOf(b64) {
  const text = atob(b64), out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

function paint(canvas, values, h, w, offset, colour) {
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const [r, g, b] = colour(values[offset + i], i);
    img.data[4 * i] = r; img.data[4 * i + 1] = g; img.data[4 * i + 2] = b; img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

const gray = (v) => [v, v, v];
const viridis = (v) => INFO.run.colormap[v];

let lastSeen = null;

function showField(layer, shape, shown, y, x) {
  const field = layer.field, S = INFO.run.input_size;
  const [H, W] = [shape[1], shape[2]], [h, w] = [shown[1], shown[2]];
  // A shown cell averages units floor(y H / h) .. ceil((y + 1) H / h) - 1 (adaptive average pooling).
  const y0 = Math.floor(y * H / h), y1 = Math.ceil((y + 1) * H / h) - 1;
  const x0 = Math.floor(x * W / w), x1 = Math.ceil((x + 1) * W / w) - 1;
  const top = field.start + y0 * field.jump, bottom = field.start + y1 * field.jump + field.size - 1;
  const left = field.start + x0 * field.jump, right = field.start + x1 * field.jump + field.size - 1;
  const canvas = $("seen-field");
  canvas.width = S; canvas.height = S;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, S, S);
  ctx.fillStyle = "rgba(255, 80, 0, 0.35)";
  ctx.strokeStyle = "rgb(255, 120, 0)";
  ctx.lineWidth = Math.max(1, S / 112);
  const cx0 = Math.max(0, left), cy0 = Math.max(0, top), cx1 = Math.min(S - 1, right), cy1 = Math.min(S - 1, bottom);
  ctx.fillRect(cx0, cy0, cx1 - cx0 + 1, cy1 - cy0 + 1);
  ctx.strokeRect(cx0, cy0, cx1 - cx0 + 1, cy1 - cy0 + 1);
  const units = y0 === y1 && x0 === x1 ? `unit (${y0}, ${x0})` : `units (${y0}..${y1}, ${x0}..${x1})`;
  $("field-text").textContent = `${layer.name} ${units}: input rows ${top}..${bottom}, columns ${left}..${right} ` +
    `(${field.size}\u00d7${field.size} per unit, ${field.jump} apart; outside 0..${S - 1} is padding)`;
}

function showRun(a) {
  const S = a.input.size;
  lastSeen = bytesOf(a.input.data);
  paint($("seen"), lastSeen, S, S, 0, gray);
  $("seen-field").getContext("2d").clearRect(0, 0, $("seen-field").width, $("seen-field").height);
  $("top").replaceChildren(...a.top.map((t) => {
    const item = el("li", { title: "click: the map of this class" }, `${t.class} ${(100 * t.probability).toFixed(1)}%`,
      el("meter", { min: 0, max: 1, value: t.probability }));
    item.addEventListener("click", () => explainClass(lastSource[0], lastSource[1], t.label));
    return item;
  }));
  $("top").setAttribute("data-label", a.top[0].label);
  $("truth").textContent = a.truth ? `true class: ${a.truth.class}` : "";
  $("unlike").textContent = a.unlike_training_data ? `unlike the training data: ${a.unlike_training_data}` : "";
  const box = $("layers"); box.replaceChildren();
  a.layers.forEach((layer, n) => {
    const meta = INFO.run.layers[n];
    const [c, h, w] = layer.shown, values = bytesOf(layer.data);
    const row = el("div", { class: "layer", "data-layer": layer.name });
    row.append(el("div", { class: "name" }, `${layer.name} (${meta.type}) output ${layer.shape.join("\u00d7")}` +
      (h < layer.shape[1] ? `, shown averaged to ${h}\u00d7${w}` : "") +
      `; receptive field ${meta.field.size}\u00d7${meta.field.size}; values ${fmt(layer.low)}..${fmt(layer.high)}`));
    for (let k = 0; k < c; k++) {
      const canvas = el("canvas", { title: `channel ${k}` });
      paint(canvas, values, h, w, k * h * w, viridis);
      canvas.addEventListener("click", (ev) => {
        const r = canvas.getBoundingClientRect();
        const y = Math.min(h - 1, Math.floor((ev.clientY - r.top) / r.height * h));
        const x = Math.min(w - 1, Math.floor((ev.clientX - r.left) / r.width * w));
        showField(meta, layer.shape, layer.shown, y, x);
      });
      row.append(canvas);
    }
    box.append(row);
  });
  document.body.setAttribute("data-analyses", String(parseInt(document.body.getAttribute("data-analyses") || "0", 10) + 1));
}

function channels() {
  const v = Math.min(INFO.limits.channels_shown, Math.max(1, num("channels")));
  $("channels").value = v;
  return v;
}

// The prediction and the maps first; then the attribution map of the top class, a request of its own.
async function analyzeAndExplain(query, body) {
  const answer = await api(`/api/analyze?${query}&channels=${channels()}`, requestOf(body));
  showRun(answer);
  return explainRequest(query, body, answer.top[0].label);
}

function requestOf(body) {
  return { method: "POST", body: body || undefined, headers: body ? { "content-type": body.type || "application/octet-stream" } : {} };
}

function explainRequest(query, body, target) {
  return api(`/api/explain?${query}${query ? "&" : ""}target=${target}&map=${$("map").value}`, requestOf(body));
}

function showExplanation(m) {
  const S = m.size, sal = bytesOf(m.data);
  paint($("saliency"), sal, S, S, 0, (v, i) => {
    const g = lastSeen ? lastSeen[i] * 0.5 : 0;
    return [Math.min(255, g + v), g + v * 0.3, g];
  });
  $("saliency-class").textContent = m.class;
  document.body.setAttribute("data-explained", String(parseInt(document.body.getAttribute("data-explained") || "0", 10) + 1));
}

const analyze = latest(analyzeAndExplain, showExplanation);
const explainClass = latest(explainRequest, showExplanation);
let lastSource = ["test=0", null];
const analyzeFrom = (query, body) => { lastSource = [query, body]; analyze(query, body); };
const again = () => analyze(...lastSource);

function setupRun() {
  const run = INFO.run;
  $("run-title").textContent = `${run.model}: input ${run.input_size}\u00d7${run.input_size}, ${run.layers.length} layers shown, ` +
    `${run.test_images} test images`;
  $("input-size").textContent = `(${run.input_size}\u00d7${run.input_size})`;
  $("kernels").src = "/api/kernels.png";
  $("test-index").max = run.test_images - 1;
  const canvas = $("draw"), ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  const sendDrawing = debounce(() => canvas.toBlob((blob) => analyzeFrom("", blob), "image/png"), 120);
  let last = null;
  const at = (ev) => { const r = canvas.getBoundingClientRect(); return [(ev.clientX - r.left) * canvas.width / r.width, (ev.clientY - r.top) * canvas.height / r.height]; };
  canvas.addEventListener("pointerdown", (ev) => { last = at(ev); canvas.setPointerCapture(ev.pointerId); });
  canvas.addEventListener("pointermove", (ev) => {
    if (!last) return;
    const p = at(ev);
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 22; ctx.lineCap = "round";
    ctx.beginPath(); ctx.moveTo(last[0], last[1]); ctx.lineTo(p[0], p[1]); ctx.stroke();
    last = p;
    sendDrawing();
  });
  const end = () => { if (last) sendDrawing(); last = null; };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", () => { clear(); sendDrawing(); });
  const sendFile = (file) => {
    if (!file) return;
    if (file.size > INFO.limits.upload_bytes) { status(`${file.name}: larger than ${INFO.limits.upload_bytes} bytes`, true); return; }
    analyzeFrom("", file);
  };
  canvas.addEventListener("dragover", (ev) => { ev.preventDefault(); canvas.classList.add("dragover"); });
  canvas.addEventListener("dragleave", () => canvas.classList.remove("dragover"));
  canvas.addEventListener("drop", (ev) => { ev.preventDefault(); canvas.classList.remove("dragover"); sendFile(ev.dataTransfer.files[0]); });
  $("file").addEventListener("change", () => sendFile($("file").files[0]));
  const showTest = () => {
    const i = Math.min(run.test_images - 1, Math.max(0, num("test-index")));
    $("test-index").value = i;
    analyzeFrom(`test=${i}`, null);
  };
  $("test-show").addEventListener("click", showTest);
  $("test-index").addEventListener("change", showTest);
  $("test-random").addEventListener("click", () => { $("test-index").value = Math.floor(Math.random() * run.test_images); showTest(); });
  $("channels").max = INFO.limits.channels_shown;
  $("channels").addEventListener("change", again);
  $("map").addEventListener("change", again);
  showTest();
}

function tab(name) {
  $("ops").hidden = name !== "ops"; $("run").hidden = name !== "run";
  $("tab-ops").classList.toggle("active", name === "ops"); $("tab-run").classList.toggle("active", name === "run");
}

async function main() {
  try { INFO = await api("/api/info"); } catch (err) { status(err.message, true); return; }
  $("tab-ops").addEventListener("click", () => tab("ops"));
  $("tab-run").addEventListener("click", () => tab("run"));
  setupOps();
  if (INFO.run) { $("run-body").hidden = false; setupRun(); tab(location.hash === "#ops" ? "ops" : "run"); }
  else { $("run-none").hidden = false; tab("ops"); }
  document.body.setAttribute("data-ready", "1");
}

main();
