/* The views of the attention explorer, each drawn from the state {run, type, layer, head, pair,
   step} and the embedded data; `select(change)` (explorer.js) changes the state and redraws. */
"use strict";

const TYPE_NAMES = {encoder_self: "encoder self", decoder_self: "decoder self", cross: "cross"};
const TYPE_COLOURS = {encoder_self: "#1f77b4", decoder_self: "#2ca02c", cross: "#d62728"};
const LAYER_COLOURS = ["#8da0cb", "#fc8d62", "#66c2a5", "#e78ac3", "#a6d854", "#ffd92f", "#e5c494", "#b3b3b3"];
const STAT_NOTES = {
  entropy: "entropy (nats)",
  entropy_normalized: "entropy / log(keys): 1 uniform, 0 one-hot",
  confidence: "confidence: largest weight of a query",
  distance: "distance from the diagonal (tokens)",
  bos_eos_mass: "weight on BOS / EOS keys",
};

/* The step of `run` closest to, and not after, `step` (its first one when all are later). */
function nearestStepIndex(run, step) {
  let best = 0;
  run.steps.forEach((s, i) => { if (s <= step) best = i; });
  return best;
}

/* The nearest layer that has a head (a pruned layer may have none), then a head it has. */
function clampHead(run, type, layer, head) {
  const t = run.types[type];
  layer = Math.min(layer, t.layers - 1);
  if (layerHeads(t, layer) === 0) {
    const withHeads = [...Array(t.layers).keys()].filter(l => layerHeads(t, l) > 0);
    if (withHeads.length) layer = withHeads.reduce((a, b) => Math.abs(b - layer) < Math.abs(a - layer) ? b : a);
  }
  return {layer, head: Math.max(0, Math.min(head, layerHeads(t, layer) - 1))};
}

function badgeValues(run, type, layer, head) {
  const r = run.heads;
  if (!r) return [];
  const out = [];
  const imp = r.importance && r.importance[type], rank = r.rank && r.rank[type];
  if (imp && imp[layer] && imp[layer][head] !== undefined) out.push(["imp", imp[layer][head].toFixed(2), "importance (normalised per layer)"]);
  if (rank && rank[layer] && rank[layer][head]) out.push(["#", String(rank[layer][head]), "pruning rank: 1 = pruned first"]);
  if (type === "cross" && r.f1 && r.f1[layer] && r.f1[layer][head] !== undefined)
    out.push(["F1", r.f1[layer][head].toFixed(2), "word-alignment F1 against gold links"]);
  const gate = r.gate && r.gate[type];
  if (gate && gate[layer] && gate[layer][head] !== undefined)
    out.push(["gate", gate[layer][head].toFixed(2), "P(Hard Concrete gate open), the expected L0 of the head"]);
  const roles = r.roles && r.roles[type];
  if (roles && roles[layer] && roles[layer][head])
    for (const role of roles[layer][head]) out.push(["role", role, "head role (Voita et al. 2019), heads.json's roles"]);
  return out;
}

function badges(parent, run, type, layer, head) {
  const box = el("div", {class: "badges"}, parent);
  for (const [name, value, title] of badgeValues(run, type, layer, head))
    el("span", {class: "badge", title, text: name === "#" ? "#" + value : name === "role" ? value : `${name} ${value}`}, box);
  return box;
}

/* Every layer x head of the selected attention type at the selected step, clickable. */
function drawModelView(box, run, s, select) {
  box.textContent = "";
  const t = run.types[s.type], size = t.heads > 8 ? 36 : 72;
  const grid = el("div", {class: "grid", style: `grid-template-columns: auto repeat(${t.heads}, auto)`}, box);
  el("div", {class: "corner"}, grid);
  for (let h = 0; h < t.heads; h++) el("div", {class: "colhead", text: "head " + h}, grid);
  for (let l = 0; l < t.layers; l++) {
    el("div", {class: "rowhead", text: "layer " + l}, grid);
    for (let h = 0; h < t.heads; h++) {
      if (h >= layerHeads(t, l)) { el("div", {class: "nohead", title: `layer ${l} has no head ${h} (pruned)`}, grid); continue; }
      const cell = el("div", {class: "thumb" + (l === s.layer && h === s.head ? " selected" : ""),
        "data-layer": l, "data-head": h, title: `${TYPE_NAMES[s.type]}, layer ${l}, head ${h}`}, grid);
      drawThumb(el("canvas", {}, cell), headMap(run, s.type, l, s.step, s.pair, h), size);
      badges(cell, run, s.type, l, h);
      cell.addEventListener("click", () => select({layer: l, head: h}));
    }
  }
}

/* The selected pair, layer and head (clamped to each run's shape) at the nearest step, per run. */
function drawCompare(box, data, s, select) {
  box.textContent = "";
  const primary = data.runs[s.run], step = primary.steps[s.step];
  data.runs.forEach((run, r) => {
    const card = el("div", {class: "card" + (r === s.run ? " current" : ""), "data-run": r}, box);
    el("h3", {text: run.title}, card);
    if (!run.types[s.type]) { el("p", {class: "note", text: "no such attention type"}, card); return; }
    const {layer, head} = clampHead(run, s.type, s.layer, s.head), i = nearestStepIndex(run, step);
    const pair = Math.min(s.pair, run.types[s.type].tokens.length - 1);
    drawHeatmap(el("canvas", {class: "cmp-map"}, card), headMap(run, s.type, layer, i, pair, head), {maxSize: 260, font: 10});
    const clamped = head !== s.head || layer !== s.layer ? " (its last)" : "";
    el("p", {class: "caption", text: `layer ${layer}, head ${head}${clamped}, step ${run.steps[i]}`}, card);
    const strip = el("div", {class: "strip"}, card);
    for (let h = 0; h < layerHeads(run.types[s.type], layer); h++) {
      const c = el("canvas", {class: "mini" + (h === head ? " selected" : ""), title: `head ${h}`, "data-head": h}, strip);
      drawThumb(c, headMap(run, s.type, layer, i, pair, h), 36);
      c.addEventListener("click", () => select({run: r, layer, head: h}));
    }
    badges(card, run, s.type, layer, head);
  });
}

/* One chart per statistic: every head of the selected type over every probe step of the run
   (stat_steps; the slider's steps are these, or an even subset of them on a page over budget). */
function drawCharts(box, data, run, s, select) {
  box.textContent = "";
  const t = run.types[s.type];
  for (const name of data.stats) {
    const per = t.stats[name];  // [step][layer][head]
    const series = [];
    for (let l = 0; l < t.layers; l++) for (let h = 0; h < layerHeads(t, l); h++) {
      series.push({values: per.map(grid => grid[l] ? grid[l][h] : null), label: `layer ${l}, head ${h}`,
        colour: LAYER_COLOURS[l % LAYER_COLOURS.length], selected: l === s.layer && h === s.head,
        onClick: () => select({layer: l, head: h})});
    }
    const svg = el("svg:svg", {class: "chart", "data-stat": name}, box);
    lineChart(svg, run.stat_steps, series, {title: STAT_NOTES[name] || name, at: run.steps[s.step], colour: TYPE_COLOURS[s.type]});
  }
  const legend = el("p", {class: "note"}, box);
  for (let l = 0; l < t.layers; l++) {
    el("span", {class: "swatch", style: `background:${LAYER_COLOURS[l % LAYER_COLOURS.length]}`}, legend);
    legend.appendChild(document.createTextNode(` layer ${l}  `));
  }
}

/* The selected head's statistics at this step, the run's validation figures, its badges. */
function drawValues(table, data, run, s) {
  table.textContent = "";
  const t = run.types[s.type], head = el("tr", {}, table), row = el("tr", {}, table);
  const cell = (name, value) => { el("th", {text: name}, head); el("td", {text: value}, row); };
  const i = run.stat_index[s.step];
  for (const name of data.stats) {
    const v = t.stats[name][i][s.layer][s.head];
    cell(name, v === null ? "–" : v.toPrecision(3));
  }
  for (const [name, values] of Object.entries(run.metrics || {})) {
    const v = values[i];
    if (v !== null && v !== undefined) cell(name, String(v));
  }
  for (const [name, value, title] of badgeValues(run, s.type, s.layer, s.head)) cell(name === "#" ? "prune rank" : name, value + "");
}
