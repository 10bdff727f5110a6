// Formatting for the dashboard: every figure goes through here, so a missing or
// non-finite value shows as "—", never as NaN, undefined or null.

export const DASH = "—";

export function isNum(v) {
  return typeof v === "number" && Number.isFinite(v);
}

export function num(v, digits = 1) {
  if (!isNum(v)) return DASH;
  const out = v.toLocaleString("en-US", {
    minimumFractionDigits: digits, maximumFractionDigits: digits });
  return out === "-0" || /^-0\.0*$/.test(out) ? out.slice(1) : out;
}

// A signed power: "+12.3" / "−4.0" (a real minus sign), "0.0" when it rounds to zero.
export function signed(v, digits = 1) {
  if (!isNum(v)) return DASH;
  const text = num(Math.abs(v), digits);
  if (Number(Math.abs(v).toFixed(digits)) === 0) return text;
  return (v > 0 ? "+" : "−") + text;
}

export function pct(ratio, digits = 0) {
  return isNum(ratio) ? num(100 * ratio, digits) + " %" : DASH;
}

export function text(v) {
  return v === null || v === undefined || v === "" ? DASH : String(v);
}

let zone;  // the site's time zone, once the tariff read told it

export function setZone(tz) {
  try {
    new Intl.DateTimeFormat("en-GB", { timeZone: tz });
    zone = tz;
  } catch (e) {
    zone = undefined;  // an unknown zone: the browser's own
  }
}

export function zoneName() {
  return zone || Intl.DateTimeFormat().resolvedOptions().timeZone;
}

function parts(ms, withDate) {
  const opts = { hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: zone };
  if (withDate) Object.assign(opts, { month: "short", day: "numeric" });
  return new Intl.DateTimeFormat("en-GB", opts).format(new Date(ms));
}

// An ISO time or epoch ms as the site's local HH:MM (with the date when asked).
export function time(v, withDate = false) {
  const ms = typeof v === "string" ? Date.parse(v) : v;
  return isNum(ms) ? parts(ms, withDate) : DASH;
}

export function seconds(s) {
  if (!isNum(s)) return DASH;
  if (s < 90) return `${num(s, 0)} s`;
  if (s < 5400) return `${num(s / 60, 0)} min`;
  return `${num(s / 3600, 1)} h`;
}

// Replace an element's children with rows built from `items`; `empty` when there are none.
// Each cell carries its column's heading (data-label), which a phone shows beside it.
export function fillRows(tbody, items, cols, row, empty) {
  const head = tbody.parentElement.tHead;
  const labels = head ? [...head.rows[0].cells].map((c) => c.textContent) : [];
  tbody.replaceChildren();
  if (!items.length) {
    const tr = tbody.insertRow();
    const td = tr.insertCell();
    td.colSpan = cols;
    td.className = "muted";
    td.textContent = empty;
    return;
  }
  for (const item of items) {
    const tr = tbody.insertRow();
    for (const [i, cell] of row(item).entries()) {
      const td = tr.insertCell();
      if (labels[i]) td.dataset.label = labels[i];
      if (cell instanceof Node) td.append(cell);
      else td.textContent = cell === undefined || cell === null ? DASH : String(cell);
    }
  }
}

export function badge(label, kind) {
  const span = document.createElement("span");
  span.className = `badge ${kind}`;
  span.textContent = label;
  return span;
}

export function setText(id, value) {
  const el = document.getElementById(id);
  if (el) el.textContent = value === undefined || value === null ? DASH : String(value);
}
