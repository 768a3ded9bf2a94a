// audiosheet's page: upload or record a query, show the ranked list, the matched page with the
// passage boxed and a marker that follows the recording while it plays (from the alignment path).
"use strict";
const $ = (id) => document.getElementById(id);
const state = { items: new Map(), result: null, shown: null, page: 1, alignment: [], recorder: null };
const SVG = "http://www.w3.org/2000/svg";

async function health() {
  try {
    const h = await (await fetch("/api/health")).json();
    $("status").textContent = `${h.items} items · ${h.model}`;
    const items = await (await fetch("/api/items")).json();
    state.items = new Map(items.map((i) => [i.id, i]));
  } catch (e) { $("status").textContent = "server not reachable"; }
}

function showError(text) { $("error").textContent = text; $("error").hidden = !text; }

async function upload(file) {
  showError("");
  $("results").innerHTML = ""; $("note").textContent = ""; $("busy").hidden = false;
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("method", $("method").value);
  const isAudio = !/\.(pdf|png|jpe?g|tiff?|bmp|gif|webp)$/i.test(file.name);
  const player = $("player");
  if (isAudio) { player.src = URL.createObjectURL(file); player.hidden = false; } else { player.hidden = true; player.removeAttribute("src"); }
  try {
    const r = await fetch("/api/identify", { method: "POST", body: form });
    const body = await r.json();
    if (!r.ok) { showError(body.detail || `error ${r.status}`); return; }
    render(body);
  } catch (e) { showError(`the server did not answer (${e})`); }
  finally { $("busy").hidden = true; }
}

function fmtLocation(m) {
  const l = m.location;
  if (m.kind === "sheet") return `page ${l.page}, system ${l.system}` + (l.spans.length > 1 ? ` (+${l.spans.length - 1} more)` : "");
  return `${l.start_s.toFixed(1)}–${l.end_s.toFixed(1)} s`;
}

function render(res) {
  state.result = res;
  state.alignment = res.alignment || [];
  const list = $("results");
  list.innerHTML = "";
  res.results.forEach((m, k) => {
    const li = document.createElement("li");
    const conf = m.confidence == null ? "" : ` · confidence ${m.confidence.toFixed(2)}<span class="bar" style="width:${Math.round(60 * m.confidence)}px"></span>`;
    li.innerHTML = `<span class="piece"></span><span class="meta">score ${m.score.toFixed(3)}${conf} · ${fmtLocation(m)}</span>`;
    li.querySelector(".piece").textContent = m.piece;
    li.addEventListener("click", () => select(k));
    list.appendChild(li);
  });
  const q = res.query_info || {};
  $("note").textContent = res.results.length === 0 ? "no match" :
    (res.confident === false ? "no confident match: the piece may not be in the collection; best guesses above. " : "") +
    `${res.method}, ${res.latency_s.toFixed(2)} s` + (q.warnings ? ` · ${q.warnings.join("; ")}` : "");
  if (res.results.length) select(0);
}

function select(k) {
  const m = state.result.results[k];
  [...$("results").children].forEach((li, i) => li.classList.toggle("sel", i === k));
  state.shown = m;
  if (m.kind === "sheet") showPage(m.item, m.location.page);
  else $("pageview").hidden = true;
}

function showPage(item, page) {
  state.page = page;
  const info = state.items.get(item);
  const pages = info ? info.pages : page;
  $("pageview").hidden = false;
  $("pagetitle").textContent = state.shown ? state.shown.piece : "";
  $("pageno").textContent = `page ${page} of ${pages || "?"}`;
  const img = $("pageimg");
  const src = `/api/items/${item}/pages/${page}.png`;
  if (img.getAttribute("src") !== src) img.setAttribute("src", src);
  drawOverlay();
}

// keep page rows y0..y1 (page px) in view: scroll the page box so they sit in its upper third
function reveal(y0, y1, size) {
  const sc = $("scroller"), img = $("pageimg");
  if (!img.clientHeight || !size) return;
  const k = img.clientHeight / size[1], top = y0 * k, bottom = y1 * k;
  if (top < sc.scrollTop || bottom > sc.scrollTop + sc.clientHeight) {
    sc.scrollTo({ top: Math.max(top - sc.clientHeight / 3, 0), behavior: "smooth" });
  }
}

function drawOverlay() {
  const svg = $("overlay");
  svg.innerHTML = "";
  const m = state.shown;
  if (!m || m.kind !== "sheet") return;
  const spans = m.location.spans.filter((s) => s.page === state.page);
  const size = (spans[0] || m.location.spans[0]).page_size;
  svg.setAttribute("viewBox", `0 0 ${size[0]} ${size[1]}`);
  svg.setAttribute("preserveAspectRatio", "none");
  for (const s of spans) {
    const poly = document.createElementNS(SVG, "polygon");
    poly.setAttribute("points", s.corners.map((c) => c.join(",")).join(" "));
    poly.setAttribute("class", "passage");
    svg.appendChild(poly);
  }
  if (spans.length) {
    const ys = spans.flatMap((s) => s.corners.map((c) => c[1]));
    const show = () => reveal(Math.min(...ys), Math.max(...ys), size);
    if ($("pageimg").complete && $("pageimg").naturalWidth) show(); else $("pageimg").addEventListener("load", show, { once: true });
  }
  const band = document.createElementNS(SVG, "rect"); band.setAttribute("class", "markerband"); band.id = "band";
  const line = document.createElementNS(SVG, "line"); line.setAttribute("class", "marker"); line.id = "marker";
  band.style.display = line.style.display = "none";
  svg.append(band, line);
}

// where the recording is at time t (seconds into the file): the alignment point, interpolated in x
function pointAt(t) {
  const a = state.alignment;
  if (!a.length || t < a[0].t - 1 || t > a[a.length - 1].t + 1) return null;
  let lo = 0, hi = a.length - 1;
  while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (a[mid].t <= t) lo = mid; else hi = mid - 1; }
  const p = a[lo], n = a[lo + 1];
  if (n && n.page === p.page && n.system === p.system && n.t > p.t && n.x >= p.x) {
    const f = Math.min(Math.max((t - p.t) / (n.t - p.t), 0), 1);
    return { ...p, x: p.x + f * (n.x - p.x) };
  }
  return p;
}

function follow() {
  const m = state.shown, best = state.result && state.result.results[0];
  if (!m || !best || m !== best || !state.alignment.length) return;
  const p = pointAt($("player").currentTime);
  if (!p) return;
  if (p.page !== state.page) showPage(m.item, p.page);  // the passage turns the page
  const line = document.getElementById("marker"), band = document.getElementById("band");
  if (!line) return;
  line.setAttribute("x1", p.x); line.setAttribute("x2", p.x);
  line.setAttribute("y1", p.y0 - 12); line.setAttribute("y2", p.y1 + 12);
  band.setAttribute("x", p.x - 40); band.setAttribute("width", 80);
  band.setAttribute("y", p.y0 - 12); band.setAttribute("height", p.y1 - p.y0 + 24);
  line.style.display = band.style.display = "";
  if (!$("player").paused || state.lastY !== p.y0) reveal(p.y0 - 12, p.y1 + 12, p.page_size);
  state.lastY = p.y0;
}

function tick() { follow(); if (!$("player").paused) requestAnimationFrame(tick); }

async function toggleRecording() {
  const btn = $("record");
  if (state.recorder) { state.recorder.stop(); return; }
  if (!navigator.mediaDevices || !window.MediaRecorder) { showError("this browser cannot record audio"); return; }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const rec = new MediaRecorder(stream);
    const chunks = [];
    rec.ondataavailable = (e) => chunks.push(e.data);
    rec.onstop = () => {
      stream.getTracks().forEach((t) => t.stop());
      state.recorder = null; btn.classList.remove("on"); btn.textContent = "● Record from the microphone";
      const type = rec.mimeType || "audio/webm";
      const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
      upload(new File(chunks, `recording.${ext}`, { type }));
    };
    rec.start();
    state.recorder = rec; btn.classList.add("on"); btn.textContent = "■ Stop and identify";
  } catch (e) { showError(`no microphone (${e.message || e})`); }
}

function init() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) upload(e.target.files[0]); });
  ["dragenter", "dragover"].forEach((ev) => drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((ev) => drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => { const f = e.dataTransfer.files[0]; if (f) upload(f); });
  $("record").addEventListener("click", toggleRecording);
  $("player").addEventListener("play", () => requestAnimationFrame(tick));
  $("player").addEventListener("seeked", follow);
  $("player").addEventListener("timeupdate", follow);
  $("prev").addEventListener("click", () => { if (state.shown && state.page > 1) showPage(state.shown.item, state.page - 1); });
  $("next").addEventListener("click", () => {
    const info = state.shown && state.items.get(state.shown.item);
    if (info && state.page < info.pages) showPage(state.shown.item, state.page + 1);
  });
  health();
}
init();
