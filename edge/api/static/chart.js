// The power chart: the last 24 h measured (the history's 15-min means, then each live
// state), the plan in force ahead of now (dashed), tariff periods shaded behind.
// uPlot (vendor/) draws it; times are seconds on the x axis, shown in the site's zone.

import { isNum, num, zoneName } from "./fmt.js";

const PAST_S = 24 * 3600;
const AHEAD_S = 12 * 3600;
const LIVE_STEP_S = 60;  // site seconds between two live points kept
const LIVE_MAX = 3000;
const MIN_COVER_S = 450;  // a quarter hour measured less than half of the time is a gap
const KEYS = ["grid", "pv", "bess", "load", "ev"];

const SERIES = [
  { label: "Grid", stroke: "#c0392b" },
  { label: "PV", stroke: "#d69a00" },
  { label: "Battery", stroke: "#2a7ab0" },
  { label: "Load", stroke: "#444444" },
  { label: "EVs", stroke: "#16a085" },
  { label: "Grid plan", stroke: "#c0392b", dash: [6, 4] },
  { label: "Battery plan", stroke: "#2a7ab0", dash: [6, 4] },
];

function kwValue(u, v) {
  return isNum(v) ? `${num(v)} kW` : "—";
}

// An x tick in the site's zone: "HH:MM", or the date at local midnight.
function tick(v, zone) {
  const d = new Date(v * 1000);
  const hm = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit",
    hourCycle: "h23", timeZone: zone }).format(d);
  return hm === "00:00" ? new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short",
    timeZone: zone }).format(d) : hm;
}

function intervalPoint(iv) {
  const cov = iv.covered_s;
  const t = (Date.parse(iv.start) + Date.parse(iv.end)) / 2000;
  if (!isNum(cov) || cov < MIN_COVER_S || !isNum(t)) return { t };
  const kw = (kwh) => (isNum(kwh) ? (kwh * 3600) / cov : null);
  return { t, grid: kw(iv.import_kwh - iv.export_kwh), pv: kw(iv.pv_kwh),
    bess: kw(iv.discharge_kwh - iv.charge_kwh), load: kw(iv.load_kwh), ev: kw(iv.ev_kwh) };
}

export class PowerChart {
  constructor(el, note) {
    this.el = el;
    this.note = note;
    this.history = [];
    this.historyEnd = null;  // seconds: the end of the last stored interval
    this.live = [];
    this.plan = [];
    this.spans = [];
    this.now = null;
    this.plot = null;
    this.hasEv = false;
    this.pending = false;
  }

  setHistory(doc) {
    const rows = (doc && doc.intervals) || [];
    this.history = rows.map(intervalPoint);
    if (rows.length) this.historyEnd = Date.parse(rows[rows.length - 1].end) / 1000;
    if (isNum(this.historyEnd)) this.live = this.live.filter((p) => p.t > this.historyEnd);
    this.hasEv = this.hasEv || this.history.some((p) => isNum(p.ev) && p.ev > 0);
  }

  setPlan(doc) {
    const steps = (doc && doc.steps) || [];
    this.plan = steps.map((s) => ({
      t: (Date.parse(s.start) + Date.parse(s.end)) / 2000, grid: s.grid_kw, bess: s.bess_kw,
    })).filter((p) => isNum(p.t));
  }

  setTariff(doc) {
    this.spans = ((doc && doc.spans) || []).map((s) => ({
      a: Date.parse(s.start) / 1000, b: Date.parse(s.end) / 1000, name: s.name,
      price: s.price })).filter((s) => isNum(s.a) && isNum(s.b));
    const prices = this.spans.map((s) => s.price).filter(isNum);
    this.hi = Math.max(...prices);
    this.lo = Math.min(...prices);
    const seen = new Map();
    for (const s of this.spans) seen.set(`${s.name} ${s.price}`, s);
    const names = [...seen.values()].sort((x, y) => y.price - x.price)
      .map((s) => `${s.name} ${num(s.price, 2)}`);
    const cur = (doc && doc.currency) || "";
    this.tariffText = names.length ? ` Tariff (${cur}/kWh): ${names.join(", ")}.` : "";
  }

  addLive(s) {
    const t = Date.parse(s.ts) / 1000;
    if (!isNum(t)) return;
    this.now = t;
    if (Object.keys(s.ev_chargers || {}).length) this.hasEv = true;
    const last = this.live[this.live.length - 1];
    if (last && t - last.t < LIVE_STEP_S) return;
    if (isNum(this.historyEnd) && t <= this.historyEnd) return;
    this.live.push({ t, grid: s.grid_kw, pv: s.pv_kw, bess: s.bess_kw, load: s.load_kw,
      ev: s.ev_kw });
    if (this.live.length > LIVE_MAX) this.live.splice(0, this.live.length - LIVE_MAX);
  }

  data() {
    const lo = this.now - PAST_S;
    const hi = this.now + AHEAD_S;
    const measured = [...this.history, ...this.live].filter((p) => p.t >= lo - 900);
    const planned = this.plan.filter((p) => p.t <= hi + 900);
    const xs = [...new Set([...measured.map((p) => p.t), ...planned.map((p) => p.t)])]
      .sort((a, b) => a - b);
    const at = new Map(xs.map((x, i) => [x, i]));
    const cols = SERIES.map(() => new Array(xs.length).fill(null));
    for (const p of measured) {
      KEYS.forEach((k, j) => { if (isNum(p[k])) cols[j][at.get(p.t)] = p[k]; });
    }
    for (const p of planned) {
      if (isNum(p.grid)) cols[5][at.get(p.t)] = p.grid;
      if (isNum(p.bess)) cols[6][at.get(p.t)] = p.bess;
    }
    return [xs, ...cols];
  }

  shade(u) {
    const { ctx, bbox } = u;
    ctx.save();
    for (const s of this.spans) {
      const x0 = Math.max(bbox.left, u.valToPos(s.a, "x", true));
      const x1 = Math.min(bbox.left + bbox.width, u.valToPos(s.b, "x", true));
      if (x1 <= x0) continue;
      const peak = s.price === this.hi && this.hi > this.lo;
      const valley = s.price === this.lo && this.hi > this.lo;
      ctx.fillStyle = peak ? "rgba(240, 140, 40, 0.16)" : valley ? "rgba(60, 130, 200, 0.12)"
        : "rgba(0, 0, 0, 0.035)";
      ctx.fillRect(x0, bbox.top, x1 - x0, bbox.height);
    }
    ctx.restore();
  }

  markNow(u) {
    if (!isNum(this.now)) return;
    const x = u.valToPos(this.now, "x", true);
    const { ctx, bbox } = u;
    ctx.save();
    ctx.strokeStyle = "#222";
    ctx.setLineDash([2, 3]);
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(x, bbox.top);
    ctx.lineTo(x, bbox.top + bbox.height);
    ctx.stroke();
    ctx.fillStyle = "#222";
    ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
    ctx.fillText("now", x + 4, bbox.top + 12 * devicePixelRatio);
    ctx.restore();
  }

  size() {
    const width = Math.max(260, this.el.clientWidth);
    return { width, height: width < 600 ? 240 : 320 };
  }

  create() {
    const zone = zoneName();
    const opts = {
      ...this.size(),
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), zone),
      scales: { x: { time: true, range: () => [this.now - PAST_S, this.now + AHEAD_S] } },
      axes: [{ values: (u, vals) => vals.map((v) => tick(v, zone)) },
        { values: (u, vals) => vals.map((v) => num(v, 0)), size: 44 }],
      series: [{ value: (u, v) => (isNum(v) ? new Intl.DateTimeFormat("en-GB", {
        hour: "2-digit", minute: "2-digit", day: "numeric", month: "short", timeZone: zone,
      }).format(new Date(v * 1000)) : "—") },
      ...SERIES.map((s) => ({ ...s, width: s.dash ? 1.5 : 1.75, value: kwValue,
        spanGaps: false, points: { show: false } }))],
      hooks: { drawClear: [(u) => this.shade(u)], draw: [(u) => this.markNow(u)] },
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
    this.plot = new uPlot(opts, this.data(), this.el);
    new ResizeObserver(() => this.plot && this.plot.setSize(this.size())).observe(this.el);
  }

  render() {
    if (!isNum(this.now) || typeof uPlot === "undefined") return;
    if (!this.plot) this.create();
    else this.plot.setData(this.data());
    if (this.plot.series[5].show !== this.hasEv) this.plot.setSeries(5, { show: this.hasEv });
    if (this.note) {
      const base = this.note.dataset.base || this.note.textContent;
      this.note.dataset.base = base;
      this.note.textContent = base + (this.tariffText || "");
    }
  }
}
