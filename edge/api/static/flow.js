// The energy-flow view: grid, PV, battery, loads and EV chargers around the site's bus,
// each line animated in the direction the power flows. Signs as the API gives them:
// grid + import / − export, battery + discharge / − charge.

import { DASH, isNum, num, signed } from "./fmt.js";

const NS = "http://www.w3.org/2000/svg";
const HUB = { x: 180, y: 135 };
const IDLE_KW = 0.05;  // below this a line is drawn idle

// id, label, centre; `into`: + power flows from the node into the site bus.
const NODES = [
  { id: "pv", label: "PV", x: 180, y: 32, into: +1 },
  { id: "grid", label: "Grid", x: 60, y: 135, into: +1 },
  { id: "load", label: "Loads", x: 300, y: 135, into: -1 },
  { id: "bess", label: "Battery", x: 92, y: 236, into: +1 },
  { id: "ev", label: "EVs", x: 268, y: 236, into: -1 },
];

function el(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.append(node);
  return node;
}

let parts;  // per node: its line, value text and detail text

export function initFlow(svg) {
  svg.replaceChildren();
  parts = {};
  for (const n of NODES) {
    const line = el("line", { x1: HUB.x, y1: HUB.y, x2: n.x, y2: n.y,
      class: `flow-line ${n.id} idle` }, svg);
    parts[n.id] = { line };
  }
  el("circle", { cx: HUB.x, cy: HUB.y, r: 9, class: "hub" }, svg);
  for (const n of NODES) {
    const g = el("g", { class: `node ${n.id}`, id: `flow-${n.id}` }, svg);
    el("rect", { x: n.x - 58, y: n.y - 27, width: 116, height: 54, rx: 9 }, g);
    const label = el("text", { x: n.x, y: n.y - 11, class: "label" }, g);
    label.textContent = n.label;
    const value = el("text", { x: n.x, y: n.y + 7, class: "value" }, g);
    value.textContent = DASH;
    const detail = el("text", { x: n.x, y: n.y + 21, class: "detail" }, g);
    detail.textContent = "";
    Object.assign(parts[n.id], { value, detail });
  }
}

function direction(n, kw) {
  // The line runs hub -> node; "out" animates towards the node.
  if (!isNum(kw) || Math.abs(kw) < IDLE_KW) return "idle";
  return kw * n.into > 0 ? "in" : "out";
}

function detailOf(id, kw, s) {
  const idle = !isNum(kw) || Math.abs(kw) < IDLE_KW;
  switch (id) {
    case "grid":
      return idle ? (isNum(kw) ? "balanced" : "") : kw > 0 ? "importing" : "exporting";
    case "bess": {
      const soc = isNum(s.soc_pct) ? `SoC ${num(s.soc_pct, 0)} %` : "SoC —";
      return idle ? soc : `${kw > 0 ? "discharging" : "charging"} · ${soc}`;
    }
    case "ev": {
      const n = Object.keys(s.ev_chargers || {}).length;
      if (!n) return "none on site";
      return isNum(s.ev_charging) ? `${s.ev_charging} of ${n} charging` : `${n} chargers`;
    }
    case "load":
      return isNum(s.flex_load_kw) ? `flexible ${num(s.flex_load_kw)} kW` : "building";
    default:
      return idle ? "" : "producing";
  }
}

export function renderFlow(s) {
  if (!parts) return;
  const kw = { pv: s.pv_kw, grid: s.grid_kw, load: s.load_kw, bess: s.bess_kw,
    ev: s.ev_kw };
  const hasEv = Object.keys(s.ev_chargers || {}).length > 0;
  const biggest = Math.max(1, ...Object.values(kw).filter(isNum).map(Math.abs));
  for (const n of NODES) {
    const p = parts[n.id];
    const v = n.id === "ev" && !hasEv ? null : kw[n.id];
    const signedNode = n.id === "grid" || n.id === "bess";
    p.value.textContent = isNum(v) ? `${signedNode ? signed(v) : num(v)} kW` : DASH;
    p.detail.textContent = detailOf(n.id, v, s);
    const dir = direction(n, v);
    p.line.setAttribute("class", `flow-line ${n.id} ${dir}`);
    const width = isNum(v) ? 2 + 6 * Math.min(1, Math.abs(v) / biggest) : 2;
    p.line.setAttribute("stroke-width", width.toFixed(1));
  }
}
