// The console's live parts: rows a server-sent stream updates in place, and the plots
// it redraws. Values come formatted from the server; the script only places text.
"use strict";
const SVG = "http://www.w3.org/2000/svg";

// Propagation per 10-second slot, oldest left: p50 and p99, linear from 0 to the window's
// highest p99. A slot without acknowledgements breaks the line.
function plot(svg, series) {
  const [width, height, pad] = [300, 100, 4];
  const max = Math.max(1, ...series.map((p) => p.p99_ms ?? 0));
  const step = (width - 2 * pad) / Math.max(1, series.length - 1);
  svg.replaceChildren();
  for (const [field, name] of [["p50_ms", "p50"], ["p99_ms", "p99"]]) {
    let d = "";
    let pen = "M";
    series.forEach((point, i) => {
      const value = point[field];
      if (value == null) {
        pen = "M";
        return;
      }
      const x = pad + i * step;
      const y = height - pad - (value / max) * (height - 2 * pad);
      // "h0" draws a lone point as a dot (round caps).
      d += `${pen}${x.toFixed(1)},${y.toFixed(1)} h0 `;
      pen = "L";
    });
    const line = document.createElementNS(SVG, "path");
    line.setAttribute("d", d.trim());
    line.setAttribute("class", `line ${name}`);
    svg.appendChild(line);
  }
  const caption = svg.closest("figure")?.querySelector("[data-plot-max]");
  if (caption) caption.textContent = `(top: ${max < 10 ? max.toFixed(1) : max.toFixed(0)} ms)`;
  svg.dataset.points = String(series.filter((p) => p.p99_ms != null).length);
}

// A stream the page closes when it is left: a browser holds few connections to one
// host, and a page kept for "back" would hold this one.
function openStream(url) {
  const stream = new EventSource(url);
  window.addEventListener("pagehide", () => stream.close());
  return stream;
}

// Each `data-field` cell under `element` takes its value from `values`, where it has one
// (a value left out keeps what the page shows).
function fill(element, values) {
  for (const cell of element.querySelectorAll("[data-field]")) {
    const value = values[cell.dataset.field];
    if (value !== undefined) cell.textContent = value;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const root = document.querySelector("[data-stream]");
  if (!root) return;
  const stream = openStream(root.dataset.stream);
  stream.addEventListener("channels", (e) => {
    for (const c of JSON.parse(e.data)) {
      for (const row of root.querySelectorAll(`tr[data-channel="${CSS.escape(c.name)}"]`)) {
        fill(row, c);
        const state = row.querySelector('[data-field="state"]');
        if (state) state.className = `state ${c.state}`;
      }
      const svg = root.querySelector(`svg[data-plot="${CSS.escape(c.name)}"]`);
      if (svg) plot(svg, c.series);
    }
    document.getElementById("updated").textContent = `Live: updated ${new Date().toLocaleTimeString()}`;
  });
  stream.addEventListener("engine", (e) => {
    fill(root.querySelector("[data-engine]"), JSON.parse(e.data));
  });
});

// A SKU's audit: each record the stream sends goes on top, as it is committed.
document.addEventListener("DOMContentLoaded", () => {
  const body = document.querySelector("[data-audit-stream]");
  if (!body) return;
  const stream = openStream(body.dataset.auditStream);
  stream.addEventListener("record", (e) => {
    const r = JSON.parse(e.data);
    const row = document.createElement("tr");
    const outcome = r.oversell ? `${r.outcome} · oversell` : r.outcome;
    const cells = [r.seq, r.applied_at, r.kind, r.qty, r.source, outcome,
                   `${r.available_before} → ${r.available_after}`];
    if (body.dataset.withSku) cells.splice(2, 0, r.sku);
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = String(text);
      row.appendChild(cell);
    }
    row.className = "fresh";
    body.prepend(row);
    // A channel's report of what it shows goes in its row of the SKU's channel table.
    if (["level", "reconciled", "stale_read"].includes(r.kind)) {
      const cell = document.querySelector(
        `#sku-channels tr[data-channel="${CSS.escape(r.source)}"] [data-field="reported"]`);
      const qty = r.qty === -1 ? "not listed" : String(r.qty);
      if (cell) cell.textContent = `${qty} (${r.kind}, ${r.applied_at.slice(11, 19)} UTC)`;
    }
    for (const [id, field] of [["on-hand", "on_hand_after"], ["committed", "committed_after"], ["available", "available_after"]]) {
      const cell = document.getElementById(id);
      if (cell) cell.textContent = String(r[field]);
    }
  });
});

// A SKU's channel table: the stream sends it whenever it changed.
document.addEventListener("DOMContentLoaded", () => {
  const table = document.querySelector("[data-sku-stream]");
  if (!table) return;
  const stream = openStream(table.dataset.skuStream);
  stream.addEventListener("channels", (e) => {
    for (const c of JSON.parse(e.data)) {
      const row = table.querySelector(`tr[data-channel="${CSS.escape(c.name)}"]`);
      if (row) fill(row, c);
    }
  });
});

// Every form that acts asks first (its data-confirm); the page has no inline script.
document.addEventListener("submit", (e) => {
  const question = e.target.dataset.confirm;
  if (question && !window.confirm(question)) e.preventDefault();
});
