// The command form: a dispatch, cancel or mode command with the operator's bearer token
// (kept in sessionStorage, this tab only), and the site's answer - its ack, or why the
// request was refused.

import { num, text, time } from "./fmt.js";

const KEY = "pedf-edge.api-token";
const $ = (id) => document.getElementById(id);

function cmdId() {
  const rand = Math.floor(Math.random() * 36 ** 4).toString(36).padStart(4, "0");
  return `op-${Date.now().toString(36)}-${rand}`;
}

function body(kind) {
  if (kind === "dispatch") {
    const kw = Number($("cmd-kw").value);
    const minutes = Number($("cmd-min").value);
    if (!Number.isFinite(kw)) throw new Error("kW must be a number");
    if (!Number.isInteger(minutes) || minutes < 1) throw new Error("minutes: a whole number ≥ 1");
    return { cmd_id: cmdId(), duration_s: minutes * 60, [$("cmd-field").value]: kw };
  }
  if (kind === "cancel") {
    const target = $("cmd-target").value.trim();
    if (!target) throw new Error("give the cmd_id of the dispatch to cancel");
    return { cmd_id: cmdId(), target_cmd_id: target };
  }
  return { cmd_id: cmdId(), mode: $("cmd-mode").value };
}

function show(kind, lines) {
  const box = $("ack");
  box.className = `ack ${kind}`;
  box.replaceChildren();
  for (const [i, line] of lines.entries()) {
    const p = document.createElement(i ? "p" : "strong");
    p.textContent = line;
    box.append(p);
  }
}

function ackLine(a) {
  const parts = [`${text(a.cmd_id)}: ${text(a.status)}`];
  if (a.reason) parts.push(a.reason);
  if (a.start || a.end) parts.push(`window ${time(a.start, true)} – ${time(a.end, true)}`);
  for (const k of ["grid_max_kw", "grid_min_kw", "grid_target_kw"]) {
    if (a[k] !== null && a[k] !== undefined) parts.push(`${k} ${num(a[k])}`);
  }
  if (a.mode) parts.push(`mode ${a.mode}`);
  return parts.join(" · ");
}

async function send(kind, token) {
  let payload;
  try {
    payload = body(kind);
  } catch (e) {
    show("bad", [`Not sent: ${e.message}`]);
    return;
  }
  show("wait", [`Sending ${kind} ${payload.cmd_id}…`]);
  let r;
  try {
    r = await fetch(`/api/v1/commands/${kind}`, {
      method: "POST", body: JSON.stringify(payload), cache: "no-store",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    });
  } catch (e) {
    show("bad", ["Not delivered: the site did not answer (disconnected?)", String(e)]);
    return;
  }
  if (r.status === 401) {
    show("bad", ["401 Unauthorized: the site refused the token.",
      "Enter the token from the site's api.token_file (it is kept in this tab only)."]);
    return;
  }
  let doc = null;
  try {
    doc = await r.json();
  } catch (e) {
    doc = null;
  }
  if (doc && doc.ack) {
    const status = doc.ack.status;
    const kindOf = r.ok && status !== "rejected" ? "good" : "bad";
    const lines = [`${r.status} · ${kind} ${text(status)}`, ...doc.acks.map(ackLine)];
    if (doc.detail) lines.push(doc.detail);
    show(kindOf, lines);
    if (kind === "dispatch" && kindOf === "good") $("cmd-target").value = doc.ack.cmd_id;
    return;
  }
  show("bad", [`${r.status} ${r.statusText}`, text(doc && doc.detail)]);
}

export function initCommands() {
  const form = $("cmd-form");
  const token = $("cmd-token");
  token.value = sessionStorage.getItem(KEY) || "";
  const kind = $("cmd-kind");
  const sync = () => {
    for (const k of ["dispatch", "cancel", "mode"]) $(`f-${k}`).hidden = kind.value !== k;
    $("cmd-kw").required = $("cmd-min").required = kind.value === "dispatch";
  };
  kind.addEventListener("change", sync);
  sync();
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const value = token.value.trim();
    if (!value) {
      show("bad", ["Enter the bearer token first."]);
      return;
    }
    sessionStorage.setItem(KEY, value);
    $("cmd-send").disabled = true;
    try {
      await send(kind.value, value);
    } finally {
      $("cmd-send").disabled = false;
    }
  });
  $("cmd-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    token.value = "";
    show("muted", ["Token forgotten."]);
  });
}
