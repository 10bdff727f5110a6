// The operator's dashboard: live over the API's Server-Sent Events stream (one state per
// control cycle), the slower reads polled. A dropped stream is reopened with a growing
// backoff while the page says "disconnected"; the last figures stay on screen.

import { PowerChart } from "./chart.js";
import { initCommands } from "./command.js";
import { isNum, setText, setZone, text, time, zoneName } from "./fmt.js";
import { initFlow, renderFlow } from "./flow.js";
import { renderAlarms, renderDevices, renderDoing, renderDr, renderEv,
  renderToday } from "./panels.js";

const API = "/api/v1";
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const POLL_MS = 5000;  // devices, DR, today
const SLOW_POLL_MS = 30000;  // plan, history, tariff (also at each new quarter hour)
const CHART_MS = 1000;  // the chart is redrawn at most this often

const $ = (id) => document.getElementById(id);
const chart = new PowerChart($("chart"), $("chart-note"));
let state = null;
let devices = null;
let source = null;
let backoff = BACKOFF_MIN_MS;
let retryTimer = null;
let quarter = null;  // the site's quarter hour of the last state
let chartDrawn = 0;

async function read(path) {
  const r = await fetch(API + path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

function setConn(kind, label) {
  const el = $("conn");
  el.className = `conn ${kind}`;
  el.textContent = label;
}

function onState(ev) {
  let s;
  try {
    s = JSON.parse(ev.data);
  } catch (e) {
    return;  // a torn event: the next cycle brings a whole one
  }
  state = s;
  backoff = BACKOFF_MIN_MS;
  setConn("live", "live");
  setText("cycle", isNum(s.cycle) ? String(s.cycle) : "—");
  setText("site-time", time(s.ts, true));
  renderFlow(s);
  renderDoing(s);
  renderAlarms(s, devices);
  renderEv(s);
  chart.addLive(s);
  const q = Math.floor(Date.parse(s.ts) / 900000);
  if (quarter !== null && q !== quarter) slowPoll();
  quarter = q;
  const now = performance.now();
  if (now - chartDrawn >= CHART_MS) {
    chartDrawn = now;
    chart.render();
  }
}

function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  if (source) source.close();
  source = new EventSource(`${API}/stream`);
  source.addEventListener("state", onState);
  source.onerror = () => {
    // The browser would retry on its own; we close and reopen ourselves, with a backoff
    // that grows while the site stays away, and say so on the page.
    source.close();
    source = null;
    const el = $("conn");
    el.dataset.drops = String(Number(el.dataset.drops || 0) + 1);
    const wait = backoff;
    backoff = Math.min(BACKOFF_MAX_MS, backoff * 2);
    setConn("down", `disconnected · retrying in ${Math.round(wait / 1000)} s`);
    retryTimer = setTimeout(connect, wait);
  };
}

async function settle(promise, use) {
  try {
    use(await promise);
  } catch (e) {
    use(null);
  }
}

async function poll() {
  await Promise.all([
    settle(read("/devices"), (d) => {
      devices = d;
      renderDevices(d);
      if (state) renderAlarms(state, d);
    }),
    settle(read("/dr"), renderDr),
    settle(read("/today"), renderToday),
  ]);
}

async function slowPoll() {
  const now = state ? Date.parse(state.ts) : NaN;
  const tasks = [settle(read("/plan"), (p) => p && chart.setPlan(p)),
    settle(read("/tariff"), (t) => {
      if (!t) return;
      setZone(t.timezone);
      setText("tz", text(zoneName()));
      chart.setTariff(t);
    })];
  if (isNum(now)) {
    const from = new Date(now - 24 * 3600 * 1000 - 900 * 1000).toISOString();
    const to = new Date(now).toISOString();
    tasks.push(settle(read(`/history?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`),
      (h) => h && chart.setHistory(h)));
  }
  await Promise.all(tasks);
  chart.render();
}

async function start() {
  initFlow($("flow"));
  initCommands();
  setText("tz", text(zoneName()));
  connect();
  await slowPoll();  // the zone first: times are the site's
  await poll();
  setInterval(poll, POLL_MS);
  setInterval(slowPoll, SLOW_POLL_MS);
  // History needs the site's time, which the first state brings.
  const first = setInterval(() => {
    if (state) {
      clearInterval(first);
      slowPoll();
    }
  }, 250);
}

start();
