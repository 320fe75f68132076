// Training pages: the live loss chart of a job, the new-job form's stage defaults and preset values, and
// the online DPO run's rounds chart kept current while htmx swaps its figures in.

// The live training chart: polls the job's metric stream and appends points (Chart.js, no CDN). Each
// series has its own axis named after it (loss and margin share the left one; reward accuracy and the
// learning rate have one each on the right); a series, and its axis, shows only once the job logged it.
// Until the first step is logged the page says so instead of drawing an empty chart.
(function () {
  "use strict";
  const script = document.getElementById("training-js");
  const canvas = document.getElementById("loss-chart");
  if (!script || !canvas || !window.Chart) return;
  const url = script.dataset.metricsUrl;
  const box = document.getElementById("chart-box"), empty = document.getElementById("chart-empty");
  const series = [
    { key: "loss", label: "loss", axis: "y", dash: [], point: "circle" },
    { key: "rewards/margins", label: "reward margin (DPO)", axis: "y", dash: [6, 3], point: "triangle" },
    { key: "rewards/accuracies", label: "reward accuracy (DPO)", axis: "yAccuracy", dash: [2, 2], point: "rect" },
    { key: "learning_rate", label: "learning rate", axis: "yLr", dash: [10, 4], point: "crossRot" },
  ];
  const colors = ["#2f5bd3", "#b3261e", "#1f7a4a", "#8a5a00"];
  let chart = null, maxSteps = 0, lastStep = 0;
  function draw() {  // on the first points: a chart drawn in a hidden box would have no size
    chart = new Chart(canvas, {
      type: "line",
      data: { datasets: series.map((s, i) => ({ label: s.label, data: [], yAxisID: s.axis, borderColor: colors[i],
        backgroundColor: colors[i], borderDash: s.dash, pointStyle: s.point, pointRadius: 3, tension: 0, spanGaps: true,
        hidden: true })) },
      options: {
        animation: false, maintainAspectRatio: false, parsing: false,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        plugins: { legend: { labels: { usePointStyle: true,
          filter: (item, data) => data.datasets[item.datasetIndex].data.length > 0 } } },
        scales: {
          x: { type: "linear", bounds: "data", ticks: { precision: 0 }, title: { display: true, text: "step" } },
          y: { display: "auto", title: { display: true, text: "loss / margin" } },
          // a little above 1 so that a line at 1.0 is not cut by the chart's edge
          yAccuracy: { display: "auto", position: "right", min: 0, max: 1.05, ticks: { stepSize: 0.2, includeBounds: false },
            title: { display: true, text: "reward accuracy" }, grid: { drawOnChartArea: false } },
          yLr: { display: "auto", position: "right", title: { display: true, text: "learning rate" },
            ticks: { callback: (v) => (v === 0 ? "0" : Number(v).toExponential(1)) }, grid: { drawOnChartArea: false } },
        },
      },
    });
  }
  // the words of templates/training/_job_outcome.html
  const OUTCOME = { succeeded: "the job succeeded", failed: "the job failed", cancelled: "the job was cancelled",
    stopped_by_guard: "the guard stopped the job" };
  const table = document.querySelector("#metric-table tbody");
  let after = -1;
  function fmt(v) { return v === undefined ? "" : (Math.abs(v) < 0.01 && v !== 0 ? v.toExponential(2) : v.toFixed(4)); }
  function poll() {
    fetch(url + "?after=" + after, { credentials: "same-origin" }).then((r) => r.json()).then((body) => {
      if (body.points.length && !chart) {
        box.hidden = false;
        empty.hidden = true;
        draw();
      }
      body.points.forEach((p) => {
        series.forEach((s, i) => { if (p.values[s.key] !== undefined) chart.data.datasets[i].data.push({ x: p.step, y: p.values[s.key] }); });
        if (p.values.loss !== undefined || p.values["rewards/margins"] !== undefined) {
          const tr = document.createElement("tr");
          [p.step, p.values.loss, p.values.learning_rate, p.values.grad_norm, p.values["rewards/margins"], p.values["rewards/accuracies"]]
            .forEach((v, j) => { const td = document.createElement("td"); td.className = "num"; td.textContent = j === 0 ? v : fmt(v); tr.appendChild(td); });
          table.appendChild(tr);
        }
        after = Math.max(after, p.step);
        lastStep = Math.max(lastStep, p.step);
      });
      maxSteps = body.max_steps || maxSteps;
      const finished = !(body.status === "queued" || body.status === "running");
      if (chart) {
        // a series without points stays out of the legend and the axes (a legend click still hides one)
        chart.data.datasets.forEach((d) => { if (d.data.length) d.hidden = false; });
        // the axis ends at the job's last step (max_steps; the last logged step while that is unknown)
        chart.options.scales.x.max = Math.max(maxSteps, lastStep);
        chart.update();
      }
      if (!finished) setTimeout(poll, 2000);
      else {
        document.getElementById("chart-note").textContent = "Finished: " + (OUTCOME[body.status] || "the job ended (" + body.status.replace(/_/g, " ") + ")") + ".";
        if (!chart) empty.textContent = "No steps were logged.";
      }
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

// The new-job form: each hyper-parameter box shows, greyed, the value the chosen preset gives the chosen
// stage (what an empty box trains with); both can change here, so the placeholders follow them.
(function () {
  "use strict";
  const form = document.getElementById("job-form");
  const data = document.getElementById("preset-placeholders");
  if (!form || !data) return;
  const values = JSON.parse(data.textContent);
  function update() {
    const stage = form.querySelector("input[name=stage]:checked");
    const byField = (values[form.elements.preset.value] || {})[stage ? stage.value : "sft"] || {};
    Object.keys(byField).forEach((field) => {
      const box = form.elements[field];
      if (box) box.placeholder = byField[field];
    });
  }
  form.elements.preset.addEventListener("change", update);
  form.querySelectorAll("input[name=stage]").forEach((radio) => radio.addEventListener("change", update));
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
