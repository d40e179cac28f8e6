// The console's live parts: a table whose rows a server-sent stream updates in place.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const table = document.querySelector("[data-stream]");
  if (!table) return;
  const stream = new EventSource(table.dataset.stream);
  // A page left for another closes its stream: a browser holds few connections to one
  // host, and a page kept for "back" would hold this one.
  window.addEventListener("pagehide", () => stream.close());
  stream.addEventListener("channels", (e) => {
    for (const c of JSON.parse(e.data)) {
      const row = table.querySelector(`tr[data-channel="${CSS.escape(c.name)}"]`);
      if (!row) continue;
      for (const cell of row.querySelectorAll("[data-field]")) {
        const field = cell.dataset.field;
        const unit = field.endsWith("_ms") ? " ms" : "";
        cell.textContent = `${c[field]}${unit}`;
        if (field === "sync") cell.className = `state ${c.sync}`;
      }
    }
    document.getElementById("updated").textContent = `Live: updated ${new Date().toLocaleTimeString()}`;
  });
});

// A SKU's audit: each record the stream sends goes on top, as it is committed.
document.addEventListener("DOMContentLoaded", () => {
  const body = document.querySelector("[data-audit-stream]");
  if (!body) return;
  const stream = new EventSource(body.dataset.auditStream);
  window.addEventListener("pagehide", () => stream.close());
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
    for (const [id, field] of [["on-hand", "on_hand_after"], ["committed", "committed_after"], ["available", "available_after"]]) {
      const cell = document.getElementById(id);
      if (cell) cell.textContent = String(r[field]);
    }
  });
});

// Every form that acts asks first (its data-confirm); the page has no inline script.
document.addEventListener("submit", (e) => {
  const question = e.target.dataset.confirm;
  if (question && !window.confirm(question)) e.preventDefault();
});
