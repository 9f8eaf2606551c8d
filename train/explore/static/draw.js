/* Drawing helpers of the attention explorer: the 8-bit maps, heatmaps on canvas, the
   bertviz-style head view and the line charts in SVG. No state of their own. */
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

/* Viridis, 256 steps interpolated from 9 anchors: dark = no weight, yellow = all of it. */
const LUT = (() => {
  const anchors = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
    [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];
  const out = [];
  for (let i = 0; i < 256; i++) {
    const x = i / 255 * (anchors.length - 1), a = Math.floor(Math.min(x, anchors.length - 2)), f = x - a;
    out.push(anchors[a].map((c, n) => Math.round(c + f * (anchors[a + 1][n] - c))));
  }
  return out;
})();

function el(tag, attrs, parent) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  if (parent) parent.appendChild(node);
  return node;
}

function decodeBase64(text) {
  const bin = atob(text), out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/* Heads of one layer: its own count in a pruned run (layer_heads), else the type's. */
function layerHeads(t, layer) { return t.layer_heads ? t.layer_heads[layer] : t.heads; }

/* One head's map: {w: Uint8Array (tq * tk), tq, tk, q: tokens, k: tokens}; blobs are decoded
   the first time a layer is shown. Layout of a blob: [step][pair][head][query][key]. */
const blobs = new Map();
function headMap(run, type, layer, stepIndex, pair, head) {
  const t = run.types[type], key = run.name + "|" + type + "|" + layer;
  if (!blobs.has(key)) blobs.set(key, decodeBase64(t.maps[layer]));
  const data = blobs.get(key);
  const sizes = t.tokens.map(([q, k]) => q.length * k.length), nh = layerHeads(t, layer);
  const perStep = nh * sizes.reduce((a, b) => a + b, 0);
  let offset = stepIndex * perStep + nh * sizes.slice(0, pair).reduce((a, b) => a + b, 0);
  offset += head * sizes[pair];
  const [q, k] = t.tokens[pair];
  return {w: data.subarray(offset, offset + sizes[pair]), tq: q.length, tk: k.length, q, k};
}

function setupCanvas(canvas, width, height) {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.width = width + "px";
  canvas.style.height = height + "px";
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return ctx;
}

/* ROW_SCALE.on: colour each query row relative to its largest weight (contrast for flat heads). */
const ROW_SCALE = {on: false};

/* Cells of a map into ctx at (x0, y0), each cell x cell pixels. */
function paintCells(ctx, m, x0, y0, cell) {
  const image = ctx.createImageData(m.tk, m.tq);
  const rowMax = [...Array(m.tq).keys()].map(i => ROW_SCALE.on ? Math.max(1, ...m.w.subarray(i * m.tk, (i + 1) * m.tk)) : 255);
  for (let i = 0; i < m.w.length; i++) {
    const c = LUT[Math.round(m.w[i] * 255 / rowMax[Math.floor(i / m.tk)])];
    image.data[4 * i] = c[0]; image.data[4 * i + 1] = c[1]; image.data[4 * i + 2] = c[2]; image.data[4 * i + 3] = 255;
  }
  const tmp = document.createElement("canvas");
  tmp.width = m.tk; tmp.height = m.tq;
  tmp.getContext("2d").putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tmp, x0, y0, m.tk * cell, m.tq * cell);
}

/* The selected head's map with its tokens: queries down the left, keys along the top.
   focus: {q: row} or {k: column} to outline, or null. Returns the geometry for hit tests. */
function drawHeatmap(canvas, m, opts) {
  const o = Object.assign({maxSize: 460, font: 11, focus: null, labels: true}, opts || {});
  const cell = Math.max(4, Math.min(24, Math.floor(o.maxSize / Math.max(m.tq, m.tk))));
  const probe = canvas.getContext("2d");
  probe.font = o.font + "px sans-serif";
  const widest = tokens => Math.min(110, Math.max(0, ...tokens.map(t => probe.measureText(t).width)));
  const left = o.labels ? widest(m.q) + 8 : 0, top = o.labels ? widest(m.k) + 8 : 0;
  const width = left + m.tk * cell + 2, height = top + m.tq * cell + 2;
  const ctx = setupCanvas(canvas, width, height);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  paintCells(ctx, m, left, top, cell);
  if (o.labels) {
    ctx.font = o.font + "px sans-serif";
    ctx.fillStyle = "#222";
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    m.q.forEach((t, i) => ctx.fillText(t, left - 4, top + (i + 0.5) * cell, 110));
    m.k.forEach((t, j) => {
      ctx.save();
      ctx.translate(left + (j + 0.5) * cell, top - 4);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      ctx.fillText(t, 0, 0, 110);
      ctx.restore();
    });
  }
  if (o.focus) {
    ctx.strokeStyle = "#e8175d";
    ctx.lineWidth = 2;
    if (o.focus.q !== undefined) ctx.strokeRect(left, top + o.focus.q * cell, m.tk * cell, cell);
    if (o.focus.k !== undefined) ctx.strokeRect(left + o.focus.k * cell, top, cell, m.tq * cell);
  }
  return {left, top, cell, tq: m.tq, tk: m.tk};
}

/* A small thumbnail of a map, size x size pixels at most. */
function drawThumb(canvas, m, size) {
  const cell = Math.max(1, Math.floor(size / Math.max(m.tq, m.tk)));
  const ctx = setupCanvas(canvas, m.tk * cell, m.tq * cell);
  paintCells(ctx, m, 0, 0, cell);
}

/* bertviz-style head view: query tokens left, key tokens right, one line per weight (opacity and
   width = the weight). onFocus({q}) / onFocus({k}) / onFocus(null) when a token is hovered. */
function drawHeadView(svg, m, colour, onFocus) {
  svg.textContent = "";
  const row = 18, gap = 150, pad = 10;
  const probe = el("svg:text", {class: "tok", x: 0, y: 0}, svg);
  const widest = tokens => Math.min(120, Math.max(20, ...tokens.map(t => { probe.textContent = t; return probe.getComputedTextLength(); })));
  const wq = widest(m.q) + 6, wk = widest(m.k) + 6;
  probe.remove();
  const xq = pad + wq, xk = xq + gap, width = xk + wk + pad, height = pad * 2 + row * Math.max(m.tq, m.tk);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const y = i => pad + (i + 0.5) * row;
  const lines = el("svg:g", {class: "lines"}, svg);
  for (let i = 0; i < m.tq; i++) {
    for (let j = 0; j < m.tk; j++) {
      const v = m.w[i * m.tk + j] / 255;
      if (v < 0.02) continue;  // invisible anyway; keeps the SVG small
      el("svg:line", {x1: xq + 3, y1: y(i), x2: xk - 3, y2: y(j), stroke: colour, "stroke-opacity": v.toFixed(3),
        "stroke-width": (0.6 + 3 * v).toFixed(2), "data-q": i, "data-k": j, "data-w": v.toFixed(3)}, lines);
    }
  }
  const side = (tokens, x, anchor, kind) => tokens.map((t, i) => {
    const g = el("svg:g", {class: "tokbox " + kind, "data-i": i}, svg);
    el("svg:rect", {x: anchor === "end" ? x - (kind === "q" ? wq : 0) - 2 : x - 2, y: y(i) - row / 2 + 1,
      width: (kind === "q" ? wq : wk) + 2, height: row - 2, rx: 3, fill: colour, "fill-opacity": 0}, g);
    const text = el("svg:text", {class: "tok " + kind, x, y: y(i), "text-anchor": anchor, "data-i": i,
      "dominant-baseline": "middle", text: t}, g);
    g.addEventListener("mouseenter", () => onFocus(kind === "q" ? {q: i} : {k: i}));
    g.addEventListener("mouseleave", () => onFocus(null));
    return {g, text};
  });
  return {q: side(m.q, xq - 3, "end", "q"), k: side(m.k, xk + 3, "start", "k"), lines, m};
}

/* Show one token's weights in a drawn head view: its lines bright, the others hidden, and the
   tokens on the other side shaded by their weight. focus: {q: i}, {k: j} or null. */
function focusHeadView(view, focus) {
  if (!view) return;
  view.lines.classList.toggle("focused", !!focus);
  for (const line of view.lines.children) {
    const on = !!focus && (focus.q !== undefined ? +line.dataset.q === focus.q : +line.dataset.k === focus.k);
    line.classList.toggle("on", on);
  }
  const {m} = view;
  for (const [kind, items] of [["q", view.q], ["k", view.k]]) {
    items.forEach(({g, text}, i) => {
      const self = !!focus && focus[kind] === i;
      let shade = 0;
      if (focus && focus.q !== undefined && kind === "k") shade = m.w[focus.q * m.tk + i] / 255;
      if (focus && focus.k !== undefined && kind === "q") shade = m.w[i * m.tk + focus.k] / 255;
      text.classList.toggle("hl", self);
      g.firstChild.setAttribute("fill-opacity", self ? 0.35 : (0.6 * shade).toFixed(3));
    });
  }
}

/* A small line chart: series [{values, selected, label, onClick}] over steps; marker at `at`. */
function lineChart(svg, steps, series, opts) {
  const o = Object.assign({width: 300, height: 150, title: "", at: null, colour: "#e8175d"}, opts || {});
  svg.textContent = "";
  svg.setAttribute("width", o.width);
  svg.setAttribute("height", o.height);
  svg.setAttribute("viewBox", `0 0 ${o.width} ${o.height}`);
  const m = {l: 44, r: 8, t: 18, b: 22}, w = o.width - m.l - m.r, h = o.height - m.t - m.b;
  const all = series.flatMap(s => s.values).filter(v => v !== null && Number.isFinite(v));
  let lo = all.length ? Math.min(...all) : 0, hi = all.length ? Math.max(...all) : 1;
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const s0 = steps[0], s1 = steps[steps.length - 1];
  const x = s => m.l + (s1 === s0 ? w / 2 : (s - s0) / (s1 - s0) * w), y = v => m.t + (1 - (v - lo) / (hi - lo)) * h;
  el("svg:text", {x: m.l, y: 12, class: "chart-title", text: o.title}, svg);
  el("svg:rect", {x: m.l, y: m.t, width: w, height: h, class: "frame"}, svg);
  const fmt = v => Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3);
  el("svg:text", {x: m.l - 4, y: m.t + 4, class: "tick", "text-anchor": "end", text: fmt(hi)}, svg);
  el("svg:text", {x: m.l - 4, y: m.t + h, class: "tick", "text-anchor": "end", text: fmt(lo)}, svg);
  el("svg:text", {x: m.l, y: o.height - 6, class: "tick", text: String(s0)}, svg);
  el("svg:text", {x: m.l + w, y: o.height - 6, class: "tick", "text-anchor": "end", text: String(s1)}, svg);
  el("svg:text", {x: m.l + w / 2, y: o.height - 6, class: "tick", "text-anchor": "middle", text: "step"}, svg);
  if (o.at !== null) el("svg:line", {x1: x(o.at), x2: x(o.at), y1: m.t, y2: m.t + h, class: "now"}, svg);
  const ordered = series.filter(s => !s.selected).concat(series.filter(s => s.selected));
  for (const s of ordered) {
    const pts = s.values.map((v, i) => v === null ? null : `${x(steps[i]).toFixed(1)},${y(v).toFixed(1)}`).filter(p => p);
    const line = el("svg:polyline", {points: pts.join(" "), class: s.selected ? "series selected" : "series",
      stroke: s.selected ? o.colour : s.colour || "#999"}, svg);
    el("svg:title", {text: s.label}, line);
    if (s.onClick) line.addEventListener("click", s.onClick);
    if (s.selected) s.values.forEach((v, i) => {
      if (v !== null) el("svg:circle", {cx: x(steps[i]), cy: y(v), r: 2.5, fill: o.colour}, svg);
    });
  }
}
