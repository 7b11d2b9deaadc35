// The console's only script: follow a running run's log lines (Server-Sent Events) and append
// them as text nodes, so nothing a step prints is ever read as HTML.
"use strict";
(function () {
  const logs = document.getElementById("logs");
  if (!logs || !logs.dataset.stream) return;
  const status = document.getElementById("status");
  const FINAL = ["succeeded", "failed", "canceled"];
  const after = logs.dataset.after;
  const url = logs.dataset.stream + (after ? "?after=" + encodeURIComponent(after) : "");
  const source = new EventSource(url);
  const finish = () => {
    source.close();
    window.location.reload();
  };
  const follow = () => window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
  source.addEventListener("lines", (event) => {
    const data = JSON.parse(event.data);
    const stick = follow();
    for (const line of data.lines) {
      const span = document.createElement("span");
      span.className = "line " + line.level;
      span.textContent = line.at + " " + line.level + " " + line.message + "\n";
      logs.appendChild(span);
    }
    if (status && data.status) {
      status.textContent = data.status;
      status.className = "status " + data.status;
    }
    if (stick) window.scrollTo(0, document.body.scrollHeight);
    if (FINAL.includes(data.status)) finish();  // the page shows the final events, artifacts
  });
  source.addEventListener("end", finish);
})();
