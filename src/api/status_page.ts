/**
 * The status page at `/`: one HTML document with its style and script
 * inline, no build step, no data of its own. The script reads `/v1/status`
 * and `/v1/snapshots` every two seconds and follows `/v1/pulls/events`
 * (through fetch, since EventSource cannot send the bearer token); the token
 * is asked for once and kept in the browser's localStorage.
 *
 * Everything it shows is written with textContent, never parsed as HTML, and
 * the Content-Security-Policy allows exactly this script and this style.
 *
 * @module
 */

import { createHash } from "node:crypto";

const STYLE = `
:root { --fg:#1d2430; --muted:#5f6b7a; --line:#dde3ea; --bg:#f6f8fa; --card:#fff;
  --ok:#1f883d; --bad:#cf222e; --warn:#9a6700; --local:#8250df; --peer:#0969da; --origin:#bf8700; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; flex-wrap:wrap; align-items:baseline; gap:.4rem 1.2rem; padding:.8rem 1.4rem;
  background:#24292f; color:#fff; }
header h1 { margin:0; font-size:1.15rem; letter-spacing:.02em; }
header .meta { color:#c9d1d9; font-size:.9rem; }
#conn { margin-left:auto; font-size:.85rem; }
#conn.live::before, #conn.down::before { content:""; display:inline-block; width:.6rem; height:.6rem;
  border-radius:50%; margin-right:.35rem; vertical-align:baseline; }
#conn.live::before { background:#3fb950; } #conn.down::before { background:#f85149; }
main { display:grid; gap:1rem; padding:1rem 1.4rem 2rem; grid-template-columns:repeat(auto-fit,minmax(420px,1fr)); }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:.8rem 1rem; min-width:0; }
section.wide { grid-column:1/-1; }
h2 { margin:0 0 .6rem; font-size:1rem; }
h2 .count { color:var(--muted); font-weight:normal; }
table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:.3rem .5rem; border-bottom:1px solid var(--line); white-space:nowrap; }
th { color:var(--muted); font-weight:600; font-size:.8rem; text-transform:uppercase; letter-spacing:.03em; }
td.num, th.num { text-align:right; }
td.name { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; white-space:normal; word-break:break-all; }
.empty { color:var(--muted); font-style:italic; }
.bar { position:relative; height:1.1rem; background:#eaeef2; border-radius:4px; overflow:hidden; display:flex; }
.bar > span { height:100%; }
.bar .used { background:#0969da; } .bar .reserved { background:#54aeff; }
.local { background:var(--local); } .peer { background:var(--peer); } .origin { background:var(--origin); }
.legend i.used { background:#0969da; } .legend i.reserved { background:#54aeff; }
.legend { display:flex; flex-wrap:wrap; gap:.3rem 1rem; margin-top:.4rem; color:var(--muted); font-size:.85rem; }
.legend i { display:inline-block; width:.7rem; height:.7rem; border-radius:2px; margin-right:.3rem; vertical-align:-1px; }
dl.kv { display:grid; grid-template-columns:max-content 1fr; gap:.15rem 1rem; margin:.7rem 0 0; }
dl.kv dt { color:var(--muted); } dl.kv dd { margin:0; font-variant-numeric:tabular-nums; }
.up { color:var(--ok); font-weight:600; } .down { color:var(--bad); font-weight:600; }
.pin { color:var(--warn); font-weight:600; }
.pull { padding:.5rem 0; border-bottom:1px solid var(--line); }
.pull:last-child { border-bottom:0; }
.pull .top { display:flex; gap:1rem; align-items:baseline; margin-bottom:.3rem; }
.pull .top .name { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; font-weight:600; }
.pull .top .figures { margin-left:auto; color:var(--muted); font-variant-numeric:tabular-nums; }
.pull.ended { opacity:.6; }
#login { grid-column:1/-1; }
#login form { display:flex; gap:.5rem; margin-top:.5rem; }
#login input { flex:1; max-width:32rem; padding:.35rem .5rem; font:inherit; border:1px solid var(--line); border-radius:6px; }
#login button { padding:.35rem .9rem; font:inherit; border-radius:6px; border:1px solid #1f883d; background:#1f883d; color:#fff; cursor:pointer; }
#error { color:var(--bad); }
`;

const SCRIPT = `
"use strict";
const TOKEN_KEY = "snapmesh.token";
let token = localStorage.getItem(TOKEN_KEY) || "";
let latest = { status: null, snapshots: [] };
const ended = new Map();
let lastPulls = [];
let pullsLive = false;

const $ = (id) => document.getElementById(id);

class AuthError extends Error {}

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return node;
}

function authHeaders() {
  return token ? { Authorization: "Bearer " + token } : {};
}

async function api(path) {
  const response = await fetch(path, { headers: authHeaders(), cache: "no-store" });
  if (response.status === 401) throw new AuthError("token required");
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(path + ": " + message);
  }
  return response.json();
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + units[i];
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "-";
  seconds = Math.round(seconds);
  if (seconds < 60) return seconds + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
  if (seconds < 86400) return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
  return Math.floor(seconds / 86400) + " d " + Math.floor((seconds % 86400) / 3600) + " h";
}

function ago(iso) {
  const ms = Date.now() - Date.parse(iso);
  return isFinite(ms) ? duration(Math.max(0, ms / 1000)) + " ago" : "-";
}

function pct(part, whole) {
  return whole > 0 ? Math.min(100, (100 * part) / whole) : 0;
}

function setConnection(live, text) {
  const conn = $("conn");
  conn.className = live ? "live" : "down";
  conn.textContent = text;
}

function renderHeader(s) {
  $("node").textContent = s.nodeId;
  $("meta").textContent = "snapmesh " + s.version + " · up " + duration(s.uptime) + " · " +
    (s.ready ? "ready" : "recovering") + " · " + s.dataDir;
  document.title = "snapmesh · " + s.nodeId;
}

function renderCache(s) {
  const c = s.cache;
  const bar = $("cache-bar");
  bar.replaceChildren(
    h("span", { class: "used", style: "width:" + pct(c.bytes, c.capacityBytes) + "%" }),
    h("span", { class: "reserved", style: "width:" + pct(c.reservedBytes, c.capacityBytes) + "%" }),
  );
  bar.setAttribute("title", pct(c.bytes, c.capacityBytes).toFixed(1) + "% used");
  $("cache-text").textContent = bytes(c.bytes) + " of " + bytes(c.capacityBytes) + " (" +
    pct(c.bytes, c.capacityBytes).toFixed(1) + "%)";
  const kv = [
    ["Snapshots", c.entries + " (" + c.pinned + " pinned)"],
    ["Reserved by pulls", bytes(c.reservedBytes)],
    ["Hits / misses", c.hits + " / " + c.misses],
    ["Evictions", String(c.evictions)],
    ["Origin", s.origin && s.origin.endpoint ? s.origin.endpoint + " · push " + s.origin.push.mode +
      " · " + s.origin.push.queued + " queued" + (s.origin.push.failing.length ? " · " + s.origin.push.failing.length + " failing" : "") : "none"],
    ["Journal", "seq " + s.journal.seq + " · " + bytes(s.journal.bytes) + " · " +
      (s.journal.healthy ? "healthy" : "BROKEN")],
  ];
  $("cache-kv").replaceChildren(...kv.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function renderSnapshots(list) {
  $("snap-count").textContent = "(" + list.length + ")";
  const body = $("snapshots");
  if (list.length === 0) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: "5", class: "empty" }, "No snapshots cached")));
    return;
  }
  const sorted = [...list].sort((a, b) => Date.parse(b.lastAccess) - Date.parse(a.lastAccess));
  body.replaceChildren(...sorted.map((s) =>
    h("tr", { "data-name": s.name },
      h("td", { class: "name" }, s.name),
      h("td", {}, s.pinned ? h("span", { class: "pin" }, "pinned") : ""),
      h("td", { class: "num", title: bytes(s.storedBytes) + " on disk" }, bytes(s.size)),
      h("td", {}, s.files.join(", ")),
      h("td", { title: s.lastAccess }, ago(s.lastAccess)),
    )
  ));
}

function renderPeers(peers) {
  $("peer-count").textContent = "(" + peers.filter((p) => p.healthy).length + " of " + peers.length + " up)";
  const body = $("peers");
  if (peers.length === 0) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: "4", class: "empty" }, "No peers configured")));
    return;
  }
  body.replaceChildren(...peers.map((p) =>
    h("tr", { "data-peer": p.id || p.url },
      h("td", {}, p.healthy ? h("span", { class: "up" }, "up") : h("span", { class: "down" }, "down")),
      h("td", { class: "name" }, p.id || "?"),
      h("td", { class: "name" }, p.url),
      h("td", {}, p.lastSeenMs === null ? "never" : duration(p.lastSeenMs / 1000) + " ago",
        p.lastError ? h("div", { class: "down" }, p.lastError) : null),
    )
  ));
}

function renderRestores(restores) {
  $("restore-count").textContent = "(" + restores.length + " live)";
  const body = $("restores");
  if (restores.length === 0) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: "6", class: "empty" }, "No live restore sessions")));
    return;
  }
  body.replaceChildren(...restores.map((r) =>
    h("tr", { "data-restore": r.id },
      h("td", { class: "name" }, r.id),
      h("td", { class: "name" }, r.name + " / " + r.file),
      h("td", {}, r.state + (r.pid === null ? "" : " (pid " + r.pid + ")")),
      h("td", { class: "num" }, "local " + r.faults.local + ", peer " + r.faults.peer +
        ", origin " + r.faults.origin + ", zero " + r.faults.zero),
      h("td", { class: "num" }, String(r.prefetchedPages) + (r.workingSet ? " (" + r.workingSet + ")" : "")),
      h("td", { title: r.startedAt }, ago(r.startedAt)),
    )
  ));
}

function renderPulls(pulls) {
  const now = Date.now();
  const running = new Set(pulls.map((p) => p.name));
  for (const p of lastPulls) {
    if (!running.has(p.name)) ended.set(p.name, { report: p, at: now });
  }
  for (const name of running) ended.delete(name);
  for (const [name, e] of ended) if (now - e.at > 30000) ended.delete(name);
  lastPulls = pulls;
  const rows = [...pulls.map((p) => ({ p, ended: false })),
    ...[...ended.values()].map((e) => ({ p: e.report, ended: true }))];
  $("pull-count").textContent = "(" + pulls.length + " active)";
  const box = $("pulls");
  if (rows.length === 0) {
    box.replaceChildren(h("div", { class: "empty" }, "No pulls running"));
    return;
  }
  box.replaceChildren(...rows.map(({ p, ended }) => {
    const cached = latest.snapshots.some((s) => s.name === p.name);
    const state = ended ? (cached ? "done" : "ended") : p.state;
    const src = p.bySource || {};
    const figures = bytes(p.bytesDone) + " / " + bytes(p.bytesTotal) + " · " +
      pct(p.bytesDone, p.bytesTotal).toFixed(0) + "%" +
      (ended ? "" : " · " + bytes(p.rateBytesPerSecond) + "/s · ETA " + duration(p.etaSeconds));
    return h("div", { class: "pull" + (ended ? " ended" : ""), "data-pull": p.name },
      h("div", { class: "top" }, h("span", { class: "name" }, p.name), h("span", {}, state),
        h("span", { class: "figures" }, figures)),
      h("div", { class: "bar", title: "local / peer / origin" },
        ...["local", "peer", "origin"].map((k) =>
          h("span", { class: k, style: "width:" + pct(src[k] || 0, p.bytesTotal) + "%" }))),
      h("div", { class: "legend" }, ...["local", "peer", "origin"].map((k) =>
        h("span", {}, h("i", { class: k }), k + " " + bytes(src[k] || 0)))),
    );
  }));
}

function showLogin(message) {
  $("login").hidden = false;
  $("login-message").textContent = message;
  setConnection(false, "token required");
}

let refreshing = false;
let failures = 0;
let refreshTimer = 0;

// Every 2 s while all is well; backing off to 30 s while the agent is
// unreachable or refuses the token, so an idle tab does not flood its log.
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  const delay = failures === 0 ? 2000 : Math.min(30000, 2000 * 2 ** Math.min(failures, 4));
  refreshTimer = setTimeout(refresh, delay);
}

async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    const [status, snapshots] = await Promise.all([api("/v1/status"), api("/v1/snapshots")]);
    latest = { status, snapshots };
    failures = 0;
    $("login").hidden = true;
    $("error").textContent = "";
    renderHeader(status);
    renderCache(status);
    renderSnapshots(snapshots);
    renderPeers(status.peers);
    renderRestores(status.restores || []);
    if (!pullsLive) renderPulls(status.pulls);
    setConnection(true, pullsLive ? "live" : "polling");
    followPulls();
  } catch (err) {
    failures++;
    if (err instanceof AuthError) showLogin(token ? "That token was refused." : "This agent needs its token.");
    else {
      $("error").textContent = String(err.message || err);
      setConnection(false, "agent unreachable");
    }
  } finally {
    refreshing = false;
    scheduleRefresh();
  }
}

// One event stream at a time, opened once the token works; it ends when the
// agent goes away or refuses, and the next good refresh opens it again.
let following = false;

async function followPulls() {
  if (following) return;
  following = true;
  let reader = null;
  try {
    const response = await fetch("/v1/pulls/events", { headers: authHeaders(), cache: "no-store" });
    if (!response.ok || !response.body) {
      response.body?.cancel();
      return;
    }
    reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let rest = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      // Lines may end with CRLF, LF or CR; a CR at the end may be half of a CRLF.
      const raw = rest + value;
      const held = raw.endsWith("\\r") ? "\\r" : "";
      let buffer = raw.slice(0, raw.length - held.length).replace(/\\r\\n?/g, "\\n");
      let end;
      while ((end = buffer.indexOf("\\n\\n")) >= 0) {
        const lines = buffer.slice(0, end).split("\\n");
        buffer = buffer.slice(end + 2);
        const field = (line, name) =>
          line.startsWith(name + ":") ? line.slice(name.length + 1).replace(/^ /, "") : null;
        const type = lines.map((l) => field(l, "event")).filter((v) => v !== null).pop() || "pulls";
        const data = lines.map((l) => field(l, "data")).filter((v) => v !== null);
        if (type === "pulls" && data.length > 0) {
          pullsLive = true;
          renderPulls(JSON.parse(data.join("\\n")));
        }
      }
      rest = buffer + held;
    }
  } catch (_) {
    // The stream broke; the next good refresh opens a new one.
  } finally {
    if (reader) reader.cancel().catch(() => {});
    pullsLive = false;
    following = false;
  }
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
  failures = 0;
  refresh();
});

refresh();
`;

const HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>snapmesh</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
<header>
  <h1>snapmesh · <span id="node">…</span></h1>
  <span class="meta" id="meta"></span>
  <span id="conn" class="down">connecting</span>
</header>
<main>
  <section id="login" hidden>
    <h2>Token</h2>
    <div id="login-message"></div>
    <form id="login-form" autocomplete="off">
      <input id="token" type="password" placeholder="SNAPMESH_TOKEN" aria-label="token">
      <button type="submit">Use token</button>
    </form>
  </section>
  <section id="cache">
    <h2>Cache <span class="count" id="cache-text"></span></h2>
    <div class="bar" id="cache-bar"></div>
    <div class="legend"><span><i class="used"></i>used</span>
      <span><i class="reserved"></i>reserved by running pulls</span></div>
    <dl class="kv" id="cache-kv"></dl>
    <div id="error"></div>
  </section>
  <section id="peers-section">
    <h2>Peers <span class="count" id="peer-count"></span></h2>
    <table><thead><tr><th>State</th><th>Node</th><th>URL</th><th>Last contact</th></tr></thead>
      <tbody id="peers"></tbody></table>
  </section>
  <section class="wide" id="pulls-section">
    <h2>Pulls <span class="count" id="pull-count"></span></h2>
    <div id="pulls"><div class="empty">No pulls running</div></div>
  </section>
  <section class="wide" id="restores-section">
    <h2>Restores <span class="count" id="restore-count"></span></h2>
    <table><thead><tr><th>Session</th><th>Snapshot</th><th>State</th><th class="num">Faults</th><th class="num">Prefetched pages</th><th>Started</th></tr></thead>
      <tbody id="restores"></tbody></table>
  </section>
  <section class="wide" id="snapshots-section">
    <h2>Snapshots <span class="count" id="snap-count"></span></h2>
    <table><thead><tr><th>Name</th><th>Pinned</th><th class="num">Size</th><th>Files</th><th>Last use</th></tr></thead>
      <tbody id="snapshots"></tbody></table>
  </section>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;

function cspHash(text: string): string {
  return `'sha256-${createHash("sha256").update(text).digest("base64")}'`;
}

/** The page and the headers to serve it with. */
export const STATUS_PAGE = {
  html: HTML,
  headers: {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": [
      "default-src 'none'",
      `script-src ${cspHash(SCRIPT)}`,
      `style-src ${cspHash(STYLE)}`,
      "connect-src 'self'",
      "img-src data:",
      "base-uri 'none'",
      "form-action 'none'",
      "frame-ancestors 'none'",
    ].join("; "),
  },
} as const;
