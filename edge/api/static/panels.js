// The dashboard's panels other than the flow and the chart: what the controller does and
// why, today's tiles, alarms, DR events, EV chargers and device health.

import { DASH, badge, fillRows, isNum, num, pct, seconds, setText, text, time } from "./fmt.js";

const $ = (id) => document.getElementById(id);

function listItems(ul, items, empty) {
  ul.replaceChildren();
  for (const [label, kind] of items.length ? items : [[empty, "muted"]]) {
    const li = document.createElement("li");
    li.className = kind;
    li.textContent = label;
    ul.append(li);
  }
}

function limit(v, what) {
  return isNum(v) ? `${what} ${num(v)} kW` : null;
}

export function renderDoing(s) {
  setText("mode", text(s.mode));
  $("mode").className = `mode ${["safe", "hold", "starting"].includes(s.mode) ? "warn" : ""}`;
  setText("reason", text(s.reason));
  const b = s.bounds || {};
  const bounds = [
    limit(b.import_limit_kw, "import at most"),
    isNum(b.export_limit_kw) ? (b.export_limit_kw >= 0
      ? `export at most ${num(b.export_limit_kw)} kW`
      : `import at least ${num(-b.export_limit_kw)} kW`) : null,
    limit(b.grid_target_kw, "grid target"),
    limit(b.soft_import_cap_kw, "plan's peak cap"),
    limit(s.expected_grid_kw, "grid expected after the writes"),
  ].filter(Boolean).map((t) => [t, ""]);
  if (b.clipped) bounds.push(["an instruction was clipped to the site limits", "warn"]);
  listItems($("bounds"), bounds, "no grid bounds");
  const ins = (s.instructions || []).map((i) => {
    const what = [limit(i.grid_max_kw, "max"), limit(i.grid_min_kw, "min"),
      limit(i.grid_target_kw, "target")].filter(Boolean).join(", ") || "no bound";
    return [`${text(i.source)} ${text(i.id)}: ${what}, until ${time(i.end, true)}`, "ins"];
  });
  listItems($("instructions"), ins, "no instruction in force (no dispatch, DR or plan)");
  const targets = $("cmd-targets");
  targets.replaceChildren();
  for (const i of s.instructions || []) {
    if (i.source === "park" && typeof i.id === "string") {
      const o = document.createElement("option");
      o.value = i.id.replace(/^park:/, "");
      targets.append(o);
    }
  }
}

export function renderAlarms(s, devices) {
  const items = [];
  if (s.crashed) items.push(["the decision failed: the safe state is applied", "bad"]);
  for (const a of s.alarms || []) items.push([a, "bad"]);
  for (const l of s.limits_unmet || []) items.push([`${l.replace("_", " ")} not met`, "bad"]);
  for (const f of s.failed_functions || []) items.push([`control function ${f} failed`, "bad"]);
  for (const [dev, q] of Object.entries(s.not_good || {})) {
    items.push([`${dev} is ${q}`, q === "invalid" ? "bad" : "warn"]);
  }
  for (const d of (devices && devices.devices) || []) {
    if (d.quality === "good" && d.failed_polls > 0) {
      items.push([`${d.id}: ${d.failed_polls} failed polls`, "warn"]);
    }
  }
  listItems($("alarms"), items, "no alarms");
}

export function renderToday(t) {
  if (!t) {
    for (const id of ["t-import", "t-export", "t-self", "t-bill", "t-co2", "t-pv"]) {
      setText(id, DASH);
    }
    return;
  }
  setText("today-day", t.day ? `${t.day} (since local midnight)` : "");
  setText("t-import", num(t.import_kwh, 1));
  setText("t-export", num(t.export_kwh, 1));
  setText("t-self", num(t.self_consumption_pct, 0));
  setText("t-bill", num(t.bill, 2));
  setText("t-cur", text(t.currency));
  setText("t-bill-sub", `import ${num(t.import_cost, 2)} − export ${num(t.export_revenue, 2)}`);
  setText("t-co2", num(t.co2_kg, 1));
  setText("t-green", `green share ${pct(t.green_share)}`);
  setText("t-pv", num(t.pv_kwh, 1));
  setText("t-used", `consumed ${num(t.consumed_kwh, 1)} kWh (building and EVs)`);
  const day = isNum(t.covered_s) && t.from && t.to
    ? (Date.parse(t.to) - Date.parse(t.from)) / 1000 : null;
  setText("today-note", isNum(day) && day > 60 && t.covered_s < 0.95 * day
    ? `Measured ${seconds(t.covered_s)} of the ${seconds(day)} since midnight: the figures `
      + "cover what was measured." : "");
}

function ratioBadge(r) {
  if (!isNum(r)) return DASH;
  return badge(pct(r), r >= 1 ? "good" : r >= 0.8 ? "warn" : "bad");
}

export function renderDr(dr) {
  const rows = [];
  for (const e of (dr && dr.events) || []) {
    rows.push([`${e.event_id} (${e.direction})`, text(e.phase || e.status),
      num(e.declared_kw), num(e.delivered_kw), ratioBadge(e.response_ratio),
      e.alarm ? badge(pct(e.projected_ratio), "bad") : pct(e.projected_ratio)]);
  }
  for (const w of (dr && dr.waiting) || []) {
    rows.push([`${w.event_id} (${w.direction})`, "waiting for its baseline",
      DASH, DASH, DASH, DASH]);
  }
  for (const f of ((dr && dr.finals) || []).slice(-3).reverse()) {
    rows.push([`${f.event_id} (${f.direction})`, `final: ${text(f.result)}`,
      num(f.declared_kw), num(f.delivered_kw), ratioBadge(f.response_ratio), DASH]);
  }
  fillRows($("dr").tBodies[0], rows, 6, (r) => r, dr ? "no DR event" : "unavailable");
}

const STATUS_KIND = { Charging: "good", Faulted: "bad", Offline: "bad", Unavailable: "warn",
  SuspendedEV: "warn", SuspendedEVSE: "warn" };

export function renderEv(s) {
  const chargers = Object.entries(s.ev_chargers || {});
  fillRows($("ev").tBodies[0], chargers, 6, ([id, c]) => [
    id, badge(text(c.status), STATUS_KIND[c.status] || "muted"), num(c.kw),
    num(c.offered_a, 0), num(c.session_kwh), num(c.soc_pct, 0)],
  "no EV chargers on this site");
}

const QUALITY = { good: "good", stale: "warn", invalid: "bad" };

export function renderDevices(doc) {
  const devices = (doc && doc.devices) || [];
  fillRows($("devices").tBodies[0], devices, 7, (d) => [
    d.id, text(d.role), badge(text(d.quality), QUALITY[d.quality] || "muted"),
    isNum(d.age_s) ? `${seconds(d.age_s)} ago` : DASH, num(d.failed_polls, 0),
    num(d.errors, 0), text(d.last_error)], doc ? "no devices" : "unavailable");
}
