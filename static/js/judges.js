// Charts of the judge and online DPO pages (Chart.js, vendored). Data comes from json_script tags.
// Readable without colour: every series has its own marker shape and dash pattern (shown in the
// legend), axes are in % on the 0-100 % range their values live in, tooltips give exact values.
(function () {
  "use strict";
  if (!window.Chart) return;
  // Okabe-Ito: distinguishable with the common colour-vision deficiencies.
  const colors = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"];
  const points = ["circle", "triangle", "rect", "rectRot", "star", "crossRot"];
  const dashes = [[], [6, 3], [2, 2], [10, 4], [12, 5], [1, 3]];
  const INK = "#1d2330", MUTED = "#5d6677";
  function read(id) { const el = document.getElementById(id); return el ? JSON.parse(el.textContent) : null; }
  const pct = (v) => (v === null || v === undefined ? "—" : Math.round(v * 1000) / 10 + "%");
  const pctAxis = (title, min) => ({
    min: min, max: 1, title: { display: true, text: title, color: MUTED },
    ticks: { color: MUTED, callback: (v) => Math.round(v * 100) + "%" },
  });
  const legend = { position: "bottom", labels: { usePointStyle: true, color: INK, padding: 14 } };

  const calibration = read("calibration-data");
  const cal = document.getElementById("calibration-chart");
  if (calibration && cal) {
    const sets = calibration.map((j, i) => ({
      label: j.judge, showLine: true, borderColor: colors[i % colors.length], backgroundColor: colors[i % colors.length],
      borderDash: dashes[i % dashes.length], pointStyle: points[i % points.length], pointRadius: 5, pointHoverRadius: 7,
      clip: 8, data: j.bins.filter((b) => b.count).map((b) => ({ x: b.confidence, y: b.accuracy, n: b.count })),
    }));
    sets.push({ label: "perfect calibration", data: [{ x: 0.5, y: 0.5 }, { x: 1, y: 1 }], showLine: true,
      borderColor: "#777", backgroundColor: "#777", borderDash: [4, 4], borderWidth: 1.5, pointRadius: 0,
      pointHitRadius: 0, pointStyle: "line" });
    new Chart(cal, { type: "scatter", data: { datasets: sets }, options: {
      animation: false, maintainAspectRatio: false, layout: { padding: { top: 8, right: 12 } },
      plugins: {
        legend: legend,
        tooltip: { filter: (item) => item.raw.n !== undefined, callbacks: {
          label: (c) => c.dataset.label + ": right " + pct(c.raw.y) + " of " + c.raw.n + " at confidence " + pct(c.raw.x),
        } },
      },
      scales: { x: pctAxis("confidence the judge gave", 0.5), y: pctAxis("share it got right", 0) } } });
  }

  const rounds = read("round-data");
  const rc = document.getElementById("rounds-chart");
  if (rounds && rc) {
    const metric = (key, i, label) => ({ label: label, data: rounds.map((r) => ({ x: r.round, y: r[key] })),
      borderColor: colors[i], backgroundColor: colors[i], borderDash: dashes[i], pointStyle: points[i],
      pointRadius: 5, pointHoverRadius: 7, clip: 8 });
    new Chart(rc, { type: "line", data: { datasets: [metric("tool_call_accuracy", 0, "tool-call accuracy"),
      metric("response_quality", 1, "response quality")] }, options: {
      animation: false, maintainAspectRatio: false, parsing: true, layout: { padding: { top: 8, right: 12 } },
      plugins: {
        legend: legend,
        tooltip: { callbacks: { title: (items) => (items.length ? "round " + items[0].raw.x : ""),
                                label: (c) => c.dataset.label + ": " + pct(c.raw.y) } },
      },
      scales: { x: { type: "linear", ticks: { stepSize: 1, precision: 0, color: MUTED },
                     title: { display: true, text: "round (0 = starting policy)", color: MUTED } },
                y: pctAxis("share of eval cases", 0) } } });
  }
})();
