// Charts of the judge and online DPO pages (Chart.js, vendored). Data comes from json_script tags.
(function () {
  "use strict";
  if (!window.Chart) return;
  const colors = ["#2f5bd3", "#b3261e", "#1f7a4a", "#8a5a00"];
  const points = ["circle", "triangle", "rect", "crossRot"];
  const dashes = [[], [6, 3], [2, 2], [10, 4]];
  function read(id) { const el = document.getElementById(id); return el ? JSON.parse(el.textContent) : null; }

  const calibration = read("calibration-data");
  const cal = document.getElementById("calibration-chart");
  if (calibration && cal) {
    const sets = calibration.map((j, i) => ({
      label: j.judge, showLine: true, borderColor: colors[i % 4], backgroundColor: colors[i % 4],
      borderDash: dashes[i % 4], pointStyle: points[i % 4], pointRadius: 4,
      data: j.bins.filter((b) => b.count).map((b) => ({ x: b.confidence, y: b.accuracy })),
    }));
    sets.push({ label: "perfect calibration", data: [{ x: 0.5, y: 0.5 }, { x: 1, y: 1 }], showLine: true,
      borderColor: "#777", borderDash: [4, 4], pointRadius: 0 });
    new Chart(cal, { type: "scatter", data: { datasets: sets }, options: {
      animation: false, maintainAspectRatio: false, plugins: { legend: { labels: { usePointStyle: true } } },
      scales: { x: { min: 0.5, max: 1, title: { display: true, text: "confidence" } },
                y: { min: 0, max: 1, title: { display: true, text: "accuracy" } } } } });
  }

  const rounds = read("round-data");
  const rc = document.getElementById("rounds-chart");
  if (rounds && rc) {
    const metric = (key, i, label) => ({ label: label, data: rounds.map((r) => ({ x: r.round, y: r[key] })),
      borderColor: colors[i], backgroundColor: colors[i], borderDash: dashes[i], pointStyle: points[i], pointRadius: 5 });
    new Chart(rc, { type: "line", data: { datasets: [metric("tool_call_accuracy", 0, "tool_call_accuracy"),
      metric("response_quality", 1, "response_quality")] }, options: {
      animation: false, maintainAspectRatio: false, parsing: true,
      plugins: { legend: { labels: { usePointStyle: true } } },
      scales: { x: { type: "linear", ticks: { stepSize: 1 }, title: { display: true, text: "round (0 = starting policy)" } },
                y: { min: 0, max: 1, title: { display: true, text: "share of cases" } } } } });
  }
})();
