// The console's live parts: a table whose rows a server-sent stream updates in place.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const table = document.querySelector("[data-stream]");
  if (!table) return;
  const stream = new EventSource(table.dataset.stream);
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
