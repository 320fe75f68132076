// Training pages: the live loss chart of a job, the new-job form's stage defaults, and the online DPO
// run's rounds chart kept current while htmx swaps its figures in.

// The live training chart: polls the job's metric stream and appends points (Chart.js, no CDN).
(function () {
  "use strict";
  const script = document.getElementById("training-js");
  const canvas = document.getElementById("loss-chart");
  if (!script || !canvas || !window.Chart) return;
  const url = script.dataset.metricsUrl;
  const series = [
    { key: "loss", label: "loss", axis: "y", dash: [], point: "circle" },
    { key: "rewards/margins", label: "reward margin (DPO)", axis: "y", dash: [6, 3], point: "triangle" },
    { key: "rewards/accuracies", label: "reward accuracy (DPO)", axis: "y1", dash: [2, 2], point: "rect" },
    { key: "learning_rate", label: "learning rate", axis: "y2", dash: [10, 4], point: "crossRot" },
  ];
  const colors = ["#2f5bd3", "#b3261e", "#1f7a4a", "#8a5a00"];
  const chart = new Chart(canvas, {
    type: "line",
    data: { datasets: series.map((s, i) => ({ label: s.label, data: [], yAxisID: s.axis, borderColor: colors[i],
      backgroundColor: colors[i], borderDash: s.dash, pointStyle: s.point, pointRadius: 3, tension: 0, spanGaps: true })) },
    options: {
      animation: false, maintainAspectRatio: false, parsing: false,
      interaction: { mode: "nearest", axis: "x", intersect: false },
      plugins: { legend: { labels: { usePointStyle: true } } },
      scales: {
        x: { type: "linear", title: { display: true, text: "step" } },
        y: { title: { display: true, text: "loss / margin" } },
        y1: { position: "right", min: 0, max: 1, title: { display: true, text: "accuracy" }, grid: { drawOnChartArea: false } },
        y2: { display: false },
      },
    },
  });
  // the words of templates/training/_job_outcome.html
  const OUTCOME = { succeeded: "the job succeeded", failed: "the job failed", cancelled: "the job was cancelled",
    stopped_by_guard: "the guard stopped the job" };
  const table = document.querySelector("#metric-table tbody");
  let after = -1;
  function fmt(v) { return v === undefined ? "" : (Math.abs(v) < 0.01 && v !== 0 ? v.toExponential(2) : v.toFixed(4)); }
  function poll() {
    fetch(url + "?after=" + after, { credentials: "same-origin" }).then((r) => r.json()).then((body) => {
      body.points.forEach((p) => {
        series.forEach((s, i) => { if (p.values[s.key] !== undefined) chart.data.datasets[i].data.push({ x: p.step, y: p.values[s.key] }); });
        if (p.values.loss !== undefined || p.values["rewards/margins"] !== undefined) {
          const tr = document.createElement("tr");
          [p.step, p.values.loss, p.values.learning_rate, p.values.grad_norm, p.values["rewards/margins"], p.values["rewards/accuracies"]]
            .forEach((v, j) => { const td = document.createElement("td"); td.className = "num"; td.textContent = j === 0 ? v : fmt(v); tr.appendChild(td); });
          table.appendChild(tr);
        }
        after = Math.max(after, p.step);
      });
      chart.data.datasets.forEach((d) => { d.hidden = d.data.length === 0; });
      chart.update();
      if (body.status === "queued" || body.status === "running") setTimeout(poll, 2000);
      else document.getElementById("chart-note").textContent = "Finished: " + (OUTCOME[body.status] || "the job ended (" + body.status.replace(/_/g, " ") + ")") + ".";
    }).catch(() => setTimeout(poll, 5000));
  }
  poll();
})();

// The new-job form: choosing a stage selects that stage's defaults (computed by the server, in
// #stage-defaults: the newest ready snapshot of the kind the stage trains on and a start version that
// loads) and hides the snapshots the stage cannot train on.
(function () {
  "use strict";
  const form = document.getElementById("job-form");
  const data = document.getElementById("stage-defaults");
  if (!form || !data) return;
  const defaults = JSON.parse(data.textContent);
  const snapshot = form.elements.train_snapshot, base = form.elements.base_version;
  function showSnapshotsFor(stage) {
    const kind = stage === "sft" ? "sft" : "dpo";
    Array.from(snapshot.options).forEach((o) => { o.hidden = o.value !== "" && o.dataset.kind !== kind; });
  }
  function choose(select, value) {  // "" (nothing fits this stage) selects the "—" placeholder
    select.value = Array.from(select.options).some((o) => o.value === value) ? value : "";
  }
  form.querySelectorAll("input[name=stage]").forEach((radio) => radio.addEventListener("change", () => {
    const d = defaults[radio.value];
    if (!radio.checked || !d) return;
    choose(base, d.base_version);
    choose(snapshot, d.train_snapshot);
    const missing = document.getElementById("stage-missing");
    missing.textContent = d.missing;
    missing.hidden = !d.missing;
    showSnapshotsFor(radio.value);
  }));
  const checked = form.querySelector("input[name=stage]:checked");
  if (checked) showSnapshotsFor(checked.value);
})();

// The online DPO run page: htmx swaps in the new #round-data after each poll; redraw the chart from it.
(function () {
  "use strict";
  document.body.addEventListener("htmx:afterSettle", () => {
    const canvas = document.getElementById("rounds-chart"), data = document.getElementById("round-data");
    const chart = canvas && window.Chart && window.Chart.getChart(canvas);
    if (!chart || !data) return;
    const rounds = JSON.parse(data.textContent);
    // each series is labelled with its figure's name ("tool-call accuracy" draws tool_call_accuracy)
    chart.data.datasets.forEach((ds) => {
      const key = ds.label.replace(/[- ]/g, "_");
      ds.data = rounds.map((r) => ({ x: r.round, y: r[key] }));
    });
    chart.update();
  });
})();
