/* Eval report charts (Chart.js 4, vendored). Every series differs by point style and dash
   pattern as well as colour, values are labelled, and ± standard errors are drawn as
   whiskers; a data table sits beneath every chart for exact numbers. */
(function () {
  "use strict";
  // Okabe–Ito palette: distinguishable with the common colour-vision deficiencies.
  var COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"];
  var POINTS = ["circle", "rect", "triangle", "rectRot", "star", "crossRot"];
  var DASHES = [[], [8, 4], [2, 3], [10, 3, 2, 3], [4, 4], [1, 6]];

  function readJSON(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }
  function pct(v) { return v === null || v === undefined ? "—" : (100 * v).toFixed(1) + "%"; }

  // Draws ± SE whiskers from dataset.errors (fractions), on bar and line charts alike.
  var whiskers = {
    id: "seWhiskers",
    afterDatasetsDraw: function (chart) {
      var ctx = chart.ctx, y = chart.scales.y;
      chart.data.datasets.forEach(function (ds, i) {
        var meta = chart.getDatasetMeta(i);
        if (!ds.errors || meta.hidden) { return; }
        ctx.save();
        ctx.strokeStyle = "#1d2330";
        ctx.lineWidth = 1.2;
        meta.data.forEach(function (el, j) {
          var v = ds.data[j], e = ds.errors[j];
          if (v === null || v === undefined || !e) { return; }
          var x = el.x, top = y.getPixelForValue(Math.min(1, v + e)), bot = y.getPixelForValue(Math.max(0, v - e));
          ctx.beginPath();
          ctx.moveTo(x, top); ctx.lineTo(x, bot);
          ctx.moveTo(x - 4, top); ctx.lineTo(x + 4, top);
          ctx.moveTo(x - 4, bot); ctx.lineTo(x + 4, bot);
          ctx.stroke();
        });
        ctx.restore();
      });
    }
  };
  // Writes each value above its point or bar, so the chart reads without the legend's colours.
  var valueLabels = {
    id: "valueLabels",
    afterDatasetsDraw: function (chart) {
      if (!chart.options.plugins.valueLabels || !chart.options.plugins.valueLabels.display) { return; }
      var ctx = chart.ctx;
      chart.data.datasets.forEach(function (ds, i) {
        var meta = chart.getDatasetMeta(i);
        if (meta.hidden) { return; }
        ctx.save();
        ctx.font = "11px system-ui, sans-serif";
        ctx.fillStyle = "#1d2330";
        ctx.textAlign = "center";
        meta.data.forEach(function (el, j) {
          var v = ds.data[j];
          if (v === null || v === undefined) { return; }
          var e = ds.errors ? ds.errors[j] || 0 : 0;
          var yTop = chart.scales.y.getPixelForValue(Math.min(1, v + e));
          ctx.fillText(pct(v), el.x + (chart.config.type === "line" ? 16 : 0), yTop - 5);
        });
        ctx.restore();
      });
    }
  };

  function percentAxis() {
    return { min: 0, max: 1, ticks: { callback: function (v) { return Math.round(v * 100) + "%"; } },
             title: { display: true, text: "rate (± standard error)" } };
  }
  // Category names (runs, model versions, categories): written level and wrapped at spaces when each
  // has room under the plot, else left to Chart.js to slant; the tooltip always has the full name.
  function categoryAxis(canvas, labels) {
    var slot = ((canvas.parentNode.clientWidth || 600) - 80) / Math.max(1, labels.length);
    if (slot < 70) { return { ticks: { maxRotation: 50 } }; }
    var width = Math.max(8, Math.floor(slot / 6.8));
    return { ticks: { maxRotation: 0, autoSkip: false, callback: function (value) {
      var words = String(this.getLabelForValue(value)).split(" "), lines = [], line = "";
      words.forEach(function (w) {
        if (line && (line + " " + w).length > width) { lines.push(line); line = w; } else { line = line ? line + " " + w : w; }
      });
      lines.push(line);
      return lines.length > 3 ? lines.slice(0, 2).concat([lines.slice(2).join(" ").slice(0, width - 1) + "…"]) : lines;
    } } };
  }
  function tooltip() {
    return { callbacks: { label: function (c) {
      var e = c.dataset.errors ? c.dataset.errors[c.dataIndex] : null;
      return c.dataset.label + ": " + pct(c.raw) + (e ? " ± " + (100 * e).toFixed(1) : "");
    } } };
  }

  function metricsChart(canvasId, dataId) {
    var data = readJSON(dataId), canvas = document.getElementById(canvasId);
    if (!data || !canvas || !window.Chart) { return; }
    var datasets = data.metrics.map(function (m, i) {
      return { label: m.name.replace(/_/g, " "), data: m.values, errors: m.se,
               borderColor: COLOURS[i], backgroundColor: COLOURS[i], pointStyle: POINTS[i],
               pointRadius: 6, pointHoverRadius: 8, borderDash: DASHES[i], borderWidth: 2, spanGaps: true,
               clip: 10 };
    });
    new window.Chart(canvas, {
      type: "line",
      data: { labels: data.labels, datasets: datasets },
      plugins: [whiskers, valueLabels],
      options: { responsive: true, maintainAspectRatio: false, animation: false, layout: { padding: { top: 18 } },
                 scales: { x: categoryAxis(canvas, data.labels), y: percentAxis() },
                 plugins: { legend: { labels: { usePointStyle: true } }, tooltip: tooltip(),
                            valueLabels: { display: data.labels.length <= 6 && datasets.length <= 2 } } }
    });
  }

  function barChart(canvasId, dataId, label) {
    var data = readJSON(dataId), canvas = document.getElementById(canvasId);
    if (!data || !canvas || !window.Chart || !data.labels.length) { return; }
    new window.Chart(canvas, {
      type: "bar",
      data: { labels: data.labels, datasets: [{ label: label, data: data.values, errors: data.se,
              backgroundColor: "rgba(0, 114, 178, 0.35)", borderColor: "#0072B2", borderWidth: 1.5 }] },
      plugins: [whiskers, valueLabels],
      options: { responsive: true, maintainAspectRatio: false, animation: false, indexAxis: "x",
                 layout: { padding: { top: 18 } },
                 scales: { x: categoryAxis(canvas, data.labels), y: percentAxis() },
                 plugins: { legend: { display: false }, tooltip: tooltip(), valueLabels: { display: true } } }
    });
  }

  window.BadcaseEval = { metricsChart: metricsChart, barChart: barChart };

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      var kind = el.getAttribute("data-chart");
      if (kind === "metrics") { metricsChart(el.id, el.getAttribute("data-source")); }
      if (kind === "bar") { barChart(el.id, el.getAttribute("data-source"), el.getAttribute("data-label") || ""); }
    });
    // Compare: keep the selection of runs to at most what fits, and say why the button is off.
    var form = document.getElementById("compare-form");
    if (form) {
      var button = form.querySelector("button[type=submit]");
      var update = function () {
        var n = form.querySelectorAll("input[name=runs]:checked").length;
        button.disabled = n < 2;
        button.textContent = n < 2 ? "Compare (pick 2 or more runs on one suite)" : "Compare " + n + " runs";
      };
      form.addEventListener("change", update);
      update();
    }
    // Run form: show only the fields of the chosen source.
    var sources = document.querySelectorAll("input[name=source]");
    if (sources.length && document.querySelector("[data-source-fields]")) {
      var show = function () {
        var chosen = document.querySelector("input[name=source]:checked");
        document.querySelectorAll("[data-source-fields]").forEach(function (el) {
          el.hidden = !chosen || el.getAttribute("data-source-fields").split(" ").indexOf(chosen.value) < 0;
        });
      };
      sources.forEach(function (s) { s.addEventListener("change", show); });
      show();
    }
  });
})();
