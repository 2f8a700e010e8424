// Tessera's ops dashboard: every number comes from the /v1/ops/… JSON, refreshed every 2 s.
"use strict";

const REFRESH_MS = 2000;
const $ = (selector) => document.querySelector(selector);
let token = null;
let sku = null;
let before = null; // the ledger page shown: null is the newest

function takeToken() {
  const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromLink) {
    sessionStorage.setItem("tessera-token", fromLink);
    history.replaceState(null, "", location.pathname); // out of the address bar and the history
  }
  return sessionStorage.getItem("tessera-token");
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${token}`, ...(options.headers || {}) },
  });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (response.status === 401 || response.status === 403) {
    logout(body?.detail || "this token may not read the dashboard");
    throw new Error("not allowed");
  }
  if (!response.ok) throw new Error(body?.detail || `${response.status} ${response.statusText}`);
  return body;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text ?? "—";
  if (className) td.className = className;
  return td;
}

function row(cells, className) {
  const tr = document.createElement("tr");
  if (className) tr.className = className;
  for (const c of cells) tr.append(c instanceof Node ? c : cell(c));
  return tr;
}

function seconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 90) return `${value.toFixed(1)} s`;
  if (value < 5400) return `${Math.round(value / 60)} min`;
  return `${(value / 3600).toFixed(1)} h`;
}

function ago(at, now) {
  return at ? `${seconds((new Date(now) - new Date(at)) / 1000)} ago` : "never";
}

function sparkline(values) {
  const width = 120, height = 22, max = Math.max(1, ...values);
  const step = width / Math.max(1, values.length - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 1 - (v / max) * (height - 2)).toFixed(1)}`);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `commands per minute: ${values.join(", ")}`);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
  const td = document.createElement("td");
  td.append(svg);
  td.title = `last minute: ${values[values.length - 1]}`;
  return td;
}

function holderCell(shard) {
  if (!shard.holder) return cell("none", "quiet");
  // A lease whose worker's Redis connection is gone lingers until its TTL: say so.
  return shard.alive ? cell(shard.holder) : cell(`${shard.holder} (gone)`, "error");
}

async function refreshShards() {
  const view = await api("/v1/ops/shards");
  const body = $("#shards tbody");
  body.replaceChildren(
    ...view.shards.map((s) =>
      row(
        [
          cell(s.shard, "num"), holderCell(s), cell(s.epoch, "num"), cell(s.pending, "num"),
          cell(seconds(s.oldest_age_seconds), "num"), cell(s.doorbells, "num"), cell(s.delayed, "num"),
          cell(s.dead_messages, "num"), cell(s.dead_letters, "num"), cell(ago(s.last_batch_at, view.at)),
          sparkline(s.per_minute),
        ],
        s.healthy ? "" : "unhealthy",
      ),
    ),
  );
  body.querySelectorAll("tr").forEach((tr, i) => (tr.dataset.shard = view.shards[i].shard));
  $("#queues-at").textContent = `as of ${new Date(view.at).toLocaleTimeString()}`;
  const summary = $("#summary");
  summary.textContent =
    `${view.pending} pending · oldest ${seconds(view.oldest_age_seconds)} · ${view.dead_letters} dead letters` +
    (view.unhealthy.length ? ` · work waiting with no live worker on shards ${view.unhealthy.join(", ")}` : " · every shard served");
  summary.className = view.unhealthy.length ? "bad" : "";
}

async function refreshDead() {
  const dead = await api("/v1/ops/dead-letters");
  $("#dead-none").hidden = dead.length > 0;
  $("#dead tbody").replaceChildren(
    ...dead.map((d) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "Requeue";
      button.className = "primary";
      button.dataset.key = d.key;
      button.addEventListener("click", () => requeue(d.key, button));
      const action = document.createElement("td");
      action.append(button);
      return row([
        d.key, d.kind, d.sku, cell(d.shard, "num"), cell(d.error, "error"), cell(d.attempts, "num"),
        d.first_failed_at && new Date(d.first_failed_at).toLocaleString(),
        d.last_failed_at && new Date(d.last_failed_at).toLocaleString(), action,
      ]);
    }),
  );
}

async function requeue(key, button) {
  button.disabled = true;
  try {
    await api(`/v1/ops/dead-letters/${encodeURIComponent(key)}/requeue`, { method: "POST" });
  } catch (error) {
    alert(`Could not requeue ${key}: ${error.message}`);
  }
  await refreshDead();
}

// A movement's changes to the buckets other than on hand and reserved ("damaged +3 · quarantine -3").
function otherBuckets(m) {
  return [["in transit", m.in_transit], ["damaged", m.damaged], ["quarantine", m.quarantine]]
    .filter(([, delta]) => Number(delta) !== 0)
    .map(([name, delta]) => `${name} ${Number(delta) > 0 ? "+" : ""}${delta}`)
    .join(" · ") || null;
}

async function refreshStock() {
  if (!sku) return;
  let page;
  try {
    page = await api(`/v1/ops/stock/${encodeURIComponent(sku)}` + (before ? `?before=${before}` : ""));
    $("#stock-error").textContent = "";
  } catch (error) {
    $("#stock-error").textContent = error.message;
    $("#stock").hidden = true;
    return;
  }
  const s = page.stock;
  $("#stock").hidden = false;
  $("#stock-title").textContent =
    `${s.sku} — ${s.name}: on hand ${s.on_hand}, reserved ${s.reserved}, available ${s.available}, ` +
    `damaged ${s.damaged}, in quarantine ${s.quarantine}, in transit ${s.in_transit} pieces`;
  $("#lots tbody").replaceChildren(
    ...s.lots.map((l) =>
      row([l.warehouse, l.lot, l.shade, l.caliber, ...[l.on_hand, l.reserved, l.available, l.damaged, l.quarantine, l.in_transit].map((n) => cell(n, "num"))]),
    ),
  );
  $("#holds tbody").replaceChildren(
    ...page.holds.map((h) =>
      row([h.hold_id, h.status, cell(h.line_no, "num"), h.line_status, cell(h.pieces, "num"), cell(h.reserved, "num"), h.warehouse, h.lot, cell(seconds(h.seconds_left), "num")]),
    ),
  );
  $("#movements tbody").replaceChildren(
    ...page.movements.map((m) =>
      row([cell(m.id, "num"), new Date(m.at).toLocaleString(), m.kind, m.warehouse, m.lot, cell(m.on_hand, "num"), cell(m.reserved, "num"), otherBuckets(m), m.actor, m.reason, m.hold_id, m.command_key]),
    ),
  );
  $("#older").disabled = page.next_before === null;
  $("#older").onclick = () => { before = page.next_before; refreshStock(); };
  $("#newer").disabled = before === null;
}

async function refresh() {
  try {
    await Promise.all([refreshShards(), refreshDead(), refreshStock()]);
  } catch (error) {
    if (token) $("#summary").textContent = `cannot refresh: ${error.message}`;
  }
}

function logout(why) {
  token = null;
  sessionStorage.removeItem("tessera-token");
  $("#board").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = why || "";
  $("#summary").textContent = "not logged in";
}

function start() {
  token = takeToken();
  if (!token) return logout();
  $("#login").hidden = true;
  $("#board").hidden = false;
  refresh();
}

$("#login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("tessera-token", $("#token").value.trim());
  $("#token").value = "";
  start();
});
$("#logout").addEventListener("click", () => logout());
$("#stock-search").addEventListener("submit", (event) => {
  event.preventDefault();
  sku = $("#sku").value.trim();
  before = null;
  refreshStock();
});
$("#newer").addEventListener("click", () => { before = null; refreshStock(); });
window.addEventListener("hashchange", start);
start();
// Each refresh starts 2 s after the last one answered: a slow API is not sent a pile of them.
setTimeout(async function poll() {
  if (token) await refresh();
  setTimeout(poll, REFRESH_MS);
}, REFRESH_MS);
