/* The controls of the attention explorer: the state, the selectors and the step slider, and the
   redraw of every view when one of them changes. */
"use strict";

const DATA = JSON.parse(document.getElementById("explorer-data").textContent);
const $ = id => document.getElementById(id);
const state = {run: 0, type: "cross", layer: 0, head: 0, pair: 0, step: 0, focus: null};
let headView = null, mapGeometry = null, timer = null;

function currentRun() { return DATA.runs[state.run]; }

function options(select, items, value) {
  select.textContent = "";
  items.forEach(([v, label]) => el("option", {value: v, text: label}, select));
  select.value = String(value);
}

/* Subwords back to text: "\u2581" (the tokenizer's word start) becomes a space. */
function shortText(tokens, n) {
  const text = tokens.slice(0, n).join("").replace(/\u2581/g, " ").trim();
  return tokens.length > n ? text + " …" : text;
}

/* Keep the state inside the selected run's shape, then rebuild the selectors' choices. */
function syncControls() {
  const run = currentRun();
  if (!run.types[state.type]) state.type = Object.keys(run.types)[0];
  const hasHeads = k => (run.types[k].layer_heads || [run.types[k].heads]).some(n => n > 0);
  if (!hasHeads(state.type)) state.type = Object.keys(run.types).find(hasHeads) || state.type;  // all pruned
  const t = run.types[state.type];
  ({layer: state.layer, head: state.head} = clampHead(run, state.type, state.layer, state.head));
  state.pair = Math.min(state.pair, t.tokens.length - 1);
  state.step = Math.min(state.step, run.steps.length - 1);
  options($("run"), DATA.runs.map((r, i) => [i, r.title]), state.run);
  options($("type"), Object.keys(run.types).map(k => [k, TYPE_NAMES[k] || k]), state.type);
  options($("layer"), [...Array(t.layers).keys()].map(l => [l, String(l)]), state.layer);
  options($("head"), [...Array(layerHeads(t, state.layer)).keys()].map(h => [h, String(h)]), state.head);
  const src = run.types.encoder_self ? run.types.encoder_self.tokens : t.tokens.map(([q, k]) => [k, k]);
  options($("example"), src.map(([, k], i) => [i, `${i}: ${shortText(k, 8)}`]), state.pair);
  const slider = $("step");
  slider.max = String(run.steps.length - 1);
  slider.value = String(state.step);
}

function stepLabel(run) {
  const bits = [`step ${run.steps[state.step]}`, `(${state.step + 1} of ${run.steps.length})`];
  for (const [name, values] of Object.entries(run.metrics || {})) {
    const v = values[run.stat_index[state.step]];
    if (v !== null && v !== undefined) bits.push(`${name.replace("val/", "val ")} ${v}`);
  }
  return bits.join(" · ");
}

function drawSelected() {
  const run = currentRun();
  const m = headMap(run, state.type, state.layer, state.step, state.pair, state.head);
  mapGeometry = drawHeatmap($("map"), m, {focus: state.focus});
  headView = drawHeadView($("headview"), m, TYPE_COLOURS[state.type] || "#333", focus => {
    state.focus = focus;
    focusHeadView(headView, focus);
    mapGeometry = drawHeatmap($("map"), m, {focus});
  });
  focusHeadView(headView, state.focus);
  const [qName, kName] = state.type === "cross" ? ["target (query)", "source (key)"]
    : state.type === "decoder_self" ? ["target (query)", "target (key)"] : ["source (query)", "source (key)"];
  $("map-cap").textContent = `rows: ${qName}; columns: ${kName}; colour = weight ` +
    (ROW_SCALE.on ? "(dark 0, yellow = the row's largest)" : "(dark 0, yellow 1)");
  $("head-sub").textContent = `${run.title}: ${TYPE_NAMES[state.type]} attention, layer ${state.layer}, ` +
    `head ${state.head}, pair ${state.pair}, step ${run.steps[state.step]}`;
  drawValues($("values"), DATA, run, state);
}

function redraw() {
  const run = currentRun();
  $("step-label").textContent = stepLabel(run);
  drawSelected();
  drawModelView($("model"), run, state, select);
  drawCharts($("charts"), DATA, run, state, select);
  if (DATA.runs.length > 1) {
    $("compare-sub").textContent = `pair ${state.pair}, ${TYPE_NAMES[state.type]}, layer ${state.layer}, ` +
      `head ${state.head}, step ${run.steps[state.step]} (each run at its nearest earlier probe)`;
    drawCompare($("compare"), DATA, state, select);
  }
  const h = run.heads;
  $("badge-note").textContent = h
    ? `Badges from heads/heads.json (python -m train.heads, checkpoint step ${h.step}, ${h.split} split): ` +
      "imp = importance normalised per layer, #r = pruning rank (1 is pruned first), F1 = word-alignment F1 of a cross head, " +
      "gate = P(gate open) of a gated run; pos ±k / rare / sink / align = the head's roles."
    : `No heads/heads.json for this run: \`python -m train.heads run_dir=${run.name}\` adds importance, ` +
      "pruning-rank and alignment-F1 badges.";
}

/* Change the state (any of run, type, layer, head, pair, step), keep it valid, redraw. */
function select(change) {
  if (change.run !== undefined && change.run !== state.run) {
    const step = currentRun().steps[state.step];
    state.run = change.run;
    state.step = nearestStepIndex(currentRun(), step);
  }
  for (const k of ["type", "layer", "head", "pair", "step"]) if (change[k] !== undefined) state[k] = change[k];
  state.focus = null;
  syncControls();
  redraw();
}

function play() {
  if (timer) { clearInterval(timer); timer = null; $("play").textContent = "play"; return; }
  $("play").textContent = "pause";
  if (state.step >= currentRun().steps.length - 1) select({step: 0});
  timer = setInterval(() => {
    if (state.step >= currentRun().steps.length - 1) { play(); return; }
    select({step: state.step + 1});
  }, 800);
}

function hoverMap(event) {
  if (!mapGeometry) return;
  const g = mapGeometry, rect = $("map").getBoundingClientRect();
  const j = Math.floor((event.clientX - rect.left - g.left) / g.cell), i = Math.floor((event.clientY - rect.top - g.top) / g.cell);
  const m = headView && headView.m;
  if (!m || i < 0 || j < 0 || i >= g.tq || j >= g.tk) { $("map").title = ""; return; }
  $("map").title = `${m.q[i]} → ${m.k[j]}: ${(m.w[i * m.tk + j] / 255).toFixed(3)}`;
}

function stepList(steps) {
  return steps.length <= 12 ? `probe steps ${steps.join(", ")}`
    : `${steps.length} probe steps, ${steps[0]} to ${steps[steps.length - 1]}`;
}

function describe() {
  const runs = DATA.runs, first = runs[0], kinds = Object.keys(first.types);
  const pairs = first.types[kinds[0]].tokens.length;
  $("note").textContent = `${runs.length > 1 ? runs.length + " runs, swept " + DATA.swept.join(", ") + "; " : ""}` +
    `${pairs} probe pair${pairs === 1 ? "" : "s"}, ${stepList(first.stat_steps)}. ` +
    `Weights are stored as 8 bits (steps of 1/${DATA.levels}) and cropped to the real tokens; ` +
    "statistics are computed from the saved float16 weights.";
  for (const line of DATA.warnings) el("li", {text: line}, $("warnings"));
  if (runs.length < 2) { $("compare-panel").hidden = true; $("run-box").hidden = true; }
}

function start() {
  describe();
  const kinds = Object.keys(currentRun().types);
  state.type = kinds.includes("cross") ? "cross" : kinds[0];
  state.step = currentRun().steps.length - 1;
  syncControls();
  $("run").addEventListener("change", e => select({run: +e.target.value}));
  $("type").addEventListener("change", e => select({type: e.target.value}));
  $("layer").addEventListener("change", e => select({layer: +e.target.value}));
  $("head").addEventListener("change", e => select({head: +e.target.value}));
  $("example").addEventListener("change", e => select({pair: +e.target.value}));
  $("step").addEventListener("input", e => select({step: +e.target.value}));
  $("play").addEventListener("click", play);
  $("rowscale").addEventListener("change", e => { ROW_SCALE.on = e.target.checked; redraw(); });
  $("map").addEventListener("mousemove", hoverMap);
  redraw();
  document.body.dataset.ready = "1";
}

start();
