// Live training chart: polls the job's metric stream and appends points (Chart.js, no CDN).
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
      backgroundColor: colors[i], borderDash: s.dash, pointStyle: s.point, pointRadius: 3, tension: 0.15, spanGaps: true })) },
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
      else document.getElementById("chart-note").textContent = "Final: the job is " + body.status.replace(/_/g, " ") + ".";
    }).catch(() => setTimeout(poll, 5000));
  }
  poll();
})();
