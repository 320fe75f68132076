/* Lead dashboards: draws the charts the server describes in <script id="dash-charts"> with the
 * vendored Chart.js. Readable without colour: bars carry their value as text and a fill pattern per
 * series, lines a marker shape and dash pattern per series plus their name at the line's end.
 * Every bar, point and range is a link to the cases behind it (the same links are in the tables).
 * Each value axis is scaled to the series drawn on it (a Pareto's cumulative % has its own 0-100 %
 * axis); category names wrap rather than being cut (a model version's name one "+" stage a line),
 * and tooltips always carry the full name. */
(function () {
  "use strict";
  var specsNode = document.getElementById("dash-charts");
  if (!specsNode || typeof Chart === "undefined") return;
  var specs = JSON.parse(specsNode.textContent);

  // Okabe-Ito: distinguishable with the common colour-vision deficiencies.
  var COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#7a6a00", "#333333"];
  var POINTS = ["circle", "triangle", "rect", "rectRot", "star", "crossRot", "cross", "rectRounded"];
  var DASHES = [[], [6, 3], [2, 3], [10, 3, 2, 3], [12, 5], [4, 2, 1, 2], [1, 2], [8, 2]];
  var INK = "#1d2330", MUTED = "#5d6677";

  function pattern(colour, kind) {
    if (!kind) return colour;
    var c = document.createElement("canvas"), s = 8;
    c.width = c.height = s;
    var g = c.getContext("2d");
    g.fillStyle = colour; g.globalAlpha = 0.35; g.fillRect(0, 0, s, s); g.globalAlpha = 1;
    g.strokeStyle = colour; g.fillStyle = colour; g.lineWidth = 2;
    if (kind === 1) { g.beginPath(); g.moveTo(0, s); g.lineTo(s, 0); g.moveTo(-2, 2); g.lineTo(2, -2); g.moveTo(s - 2, s + 2); g.lineTo(s + 2, s - 2); g.stroke(); }
    else if (kind === 2) { g.beginPath(); g.arc(4, 4, 1.8, 0, 2 * Math.PI); g.fill(); }
    else if (kind === 3) { g.beginPath(); g.moveTo(0, 4); g.lineTo(s, 4); g.moveTo(4, 0); g.lineTo(4, s); g.stroke(); }
    else { g.beginPath(); g.moveTo(0, 0); g.lineTo(s, s); g.stroke(); }
    return g.createPattern(c, "repeat");
  }

  var measurer = document.createElement("canvas").getContext("2d");
  function textWidth(text, font) { measurer.font = font; return measurer.measureText(text).width; }
  var TICK_FONT = (Chart.defaults.font.size || 12) + "px " + Chart.defaults.font.family;
  var END_FONT = "12px system-ui, sans-serif";

  // A name as the lines of a label, no word ever cut: a model-version name breaks before each "+"
  // (demo-base / +sft-job1 / +dpo-job2; with `plus` always, else only when it does not fit), then
  // any line wider than `px` at spaces, hyphens, slashes, commas or before a bracket. A word wider
  // than `px` keeps its line (Chart.js slants the axis labels then). Past `most` lines the last ends
  // in "…"; the tooltip always has the full name.
  function lines(text, px, most, plus, font) {
    text = String(text);
    font = font || TICK_FONT;
    var whole = textWidth(text, font) <= px;
    var parts = /[^\s+]\+[^\s+]/.test(text) && (plus || !whole) ? text.split(/(?=\+)/) : [text];
    var out = [];
    parts.forEach(function (part) {
      if (textWidth(part, font) <= px) { out.push(part); return; }
      var line = "";
      part.split(/(?<=[\s\-_\/,])|(?=[(\[])/).forEach(function (w) {
        if (line.trim() && textWidth((line + w).trim(), font) > px) { out.push(line.trim()); line = ""; }
        line += w;
      });
      if (line.trim()) out.push(line.trim());
    });
    if (out.length > most) { out = out.slice(0, most); out[most - 1] += "…"; }
    return out.length === 1 ? out[0] : out;
  }

  function fmt(spec, v) {
    if (v === null || v === undefined) return "";
    if (Array.isArray(v)) return fmt(spec, v[0]) + "–" + fmt(spec, v[1]);
    var digits = Math.abs(v) < 10 && !Number.isInteger(v) ? (spec.percent ? 1 : 2) : (spec.percent ? 1 : 0);
    if (spec.kind === "hbar" && spec.min === -1) digits = 2;
    var text = Number(v).toFixed(digits);
    return spec.percent ? text + "%" : text.replace(/\.0+$/, "");
  }

  // Direct labels: values at the end of bars, whiskers for intervals, series names at line ends.
  function directLabels(spec) { return {
    id: "directLabels",
    afterDatasetsDraw: function (chart) {
      var ctx = chart.ctx;
      ctx.save();
      ctx.font = "12px system-ui, sans-serif";
      ctx.fillStyle = INK;
      var horizontal = chart.options.indexAxis === "y";
      var ends = [];
      chart.data.datasets.forEach(function (ds, di) {
        var meta = chart.getDatasetMeta(di);
        if (meta.hidden) return;
        if (ds.errors) {  // whiskers: 95% intervals on bars
          ctx.strokeStyle = INK; ctx.lineWidth = 1.2;
          meta.data.forEach(function (el, i) {
            var e = ds.errors[i];
            if (!e || e[0] === null) return;
            var scale = chart.scales[horizontal ? "x" : "y"];
            var a = scale.getPixelForValue(e[0]), b = scale.getPixelForValue(e[1]);
            ctx.beginPath();
            if (horizontal) { ctx.moveTo(a, el.y); ctx.lineTo(b, el.y); ctx.moveTo(a, el.y - 4); ctx.lineTo(a, el.y + 4); ctx.moveTo(b, el.y - 4); ctx.lineTo(b, el.y + 4); }
            else { ctx.moveTo(el.x, a); ctx.lineTo(el.x, b); ctx.moveTo(el.x - 4, a); ctx.lineTo(el.x + 4, a); ctx.moveTo(el.x - 4, b); ctx.lineTo(el.x + 4, b); }
            ctx.stroke();
          });
        }
        var type = ds.type || chart.config.type;
        if (type === "bar" && !ds.noValues) {
          meta.data.forEach(function (el, i) {
            var v = ds.data[i];
            if (v === null || v === undefined) return;
            var text = fmt(spec, v);
            if (horizontal) {
              ctx.textAlign = "left"; ctx.textBaseline = "middle";
              var x = Math.max(el.x, el.base) + 4;
              if (ds.errors && ds.errors[i] && ds.errors[i][1] !== null) x = Math.max(x, chart.scales.x.getPixelForValue(ds.errors[i][1]) + 4);
              ctx.fillText(text, x, el.y);
            } else {
              ctx.textAlign = "center"; ctx.textBaseline = "bottom";
              var y = Math.min(el.y, el.base) - 3;
              if (ds.errors && ds.errors[i] && ds.errors[i][1] !== null) y = Math.min(y, chart.scales.y.getPixelForValue(ds.errors[i][1]) - 3);
              ctx.fillText(text, el.x, y);
            }
          });
        }
        if (type === "line" && spec.kind === "range") {  // the estimate, right of its interval
          var bars = chart.data.datasets[0];
          meta.data.forEach(function (el, i) {
            var v = ds.data[i];
            if (v === null || v === undefined) return;
            var range = bars.data[i], x = el.x + 9;
            if (range && range[1] !== null) x = Math.max(x, chart.scales.x.getPixelForValue(range[1]) + 5);
            ctx.textAlign = "left"; ctx.textBaseline = "middle";
            ctx.fillText(fmt(spec, v), x, el.y);
          });
        }
        if (type === "line" && spec.kind === "line" && chart.data.datasets.length > 1) {
          for (var i = meta.data.length - 1; i >= 0; i--) {
            if (ds.data[i] !== null && ds.data[i] !== undefined) {
              ends.push({ y: meta.data[i].y, lines: ds.endLines || [ds.label], style: ds.pointStyle });
              break;
            }
          }
        }
      });
      if (ends.length) {  // series names (and marker) at their last point, nudged apart so they never overlap
        var LINE = 13;
        ends.sort(function (a, b) { return a.y - b.y; });
        for (var k = 1; k < ends.length; k++) {
          var gap = (ends[k - 1].lines.length + ends[k].lines.length) * LINE / 2;
          if (ends[k].y - ends[k - 1].y < gap) ends[k].y = ends[k - 1].y + gap;
        }
        ctx.textAlign = "left"; ctx.textBaseline = "middle";
        ends.forEach(function (e) {
          var top = e.y - (e.lines.length - 1) * LINE / 2;
          e.lines.forEach(function (line, n) { ctx.fillStyle = INK; ctx.fillText(line, chart.chartArea.right + 8, top + n * LINE); });
        });
      }
      ctx.restore();
    }
  }; }

  function dataset(spec, ds, i) {
    var colour = ds.bold ? INK : COLOURS[(ds.bold ? 0 : i) % COLOURS.length];
    var out = { label: ds.label, data: ds.data, hrefs: ds.hrefs, errors: ds.errors };
    if (spec.kind === "line") {
      return Object.assign(out, {
        type: "line", borderColor: colour, backgroundColor: colour, borderWidth: ds.bold ? 3 : 1.8,
        borderDash: ds.bold ? [] : DASHES[i % DASHES.length], pointStyle: POINTS[i % POINTS.length],
        pointRadius: 4, pointHoverRadius: 7, spanGaps: false, tension: 0
      });
    }
    if (spec.kind === "pareto" && i === 1) {
      return Object.assign(out, {
        type: "line", yAxisID: "y2", borderColor: INK, backgroundColor: INK, borderWidth: 1.5,
        borderDash: [5, 3], pointStyle: "rectRot", pointRadius: 3, order: 0
      });
    }
    if (spec.kind === "range" && i === 1) {
      return Object.assign(out, {
        type: "line", indexAxis: "y", showLine: false, borderColor: INK, backgroundColor: "#fff",
        pointStyle: "rectRot", pointRadius: 6, pointHoverRadius: 8, borderWidth: 2, order: 0
      });
    }
    return Object.assign(out, {
      type: "bar", backgroundColor: pattern(colour, i % 5), borderColor: colour, borderWidth: 1.2,
      maxBarThickness: 34, noValues: spec.kind === "range", order: 1, pointStyle: "rect"
    });
  }

  function build(spec) {
    var canvas = document.getElementById("chart-" + spec.id);
    if (!canvas) return;
    if (spec.height) canvas.parentNode.style.height = spec.height + "px";
    var horizontal = spec.kind === "hbar" || spec.kind === "range";
    var valueAxis = horizontal ? "x" : "y", catAxis = horizontal ? "y" : "x";
    var boxWidth = canvas.parentNode.clientWidth || 600;
    // Category names as lines (Chart.js draws an array as one line each), words never cut: beside
    // horizontal bars wrapped to a third of the box; under vertical bars and along a line chart
    // wrapped to the room each has, version names one stage ("+...") a line, and slanted when even
    // that does not fit (many bars: one or two lines, slanted). Tooltips carry the full name.
    var slot = (boxWidth - 100) / Math.max(1, spec.labels.length);
    var many = spec.kind === "line" && spec.labels.length > 12;  // time buckets: Chart.js skips some
    var level = horizontal || spec.kind === "line" || slot >= 64;
    var labelPx = horizontal ? Math.max(120, Math.min(190, boxWidth * 0.32)) : level && !many ? slot - 8 : 190;
    var shown = spec.labels.map(function (name) {
      return lines(name, labelPx, level ? 4 : 2, !horizontal);
    });
    var scales = {};
    scales[catAxis] = {
      ticks: { color: INK, autoSkip: many, minRotation: 0, maxRotation: horizontal || many ? 0 : level ? 45 : 60 },
      grid: { display: false }
    };
    var top = null, integers = true;  // the value axis fits only its own series (and their whiskers)
    spec.datasets.forEach(function (ds, i) {
      if (spec.kind === "pareto" && i === 1) return;  // the cumulative % has its own axis
      (ds.errors || []).forEach(function (e) { if (e && e[1] !== null) top = Math.max(top || 0, e[1]); });
      ds.data.forEach(function (v) {
        if (typeof v === "number") { top = Math.max(top || 0, v); integers = integers && Number.isInteger(v); }
      });
    });
    var ceiling, max = spec.max;
    if (max === undefined && top !== null && spec.kind !== "range") {
      ceiling = top > 0 ? top * 1.12 : (spec.percent ? 10 : 5);  // all zero: still a readable scale
      if (spec.percent && ceiling >= 90) { max = 100; ceiling = undefined; }  // a share never passes 100 %
    }
    scales[valueAxis] = {
      beginAtZero: spec.min === undefined && spec.kind !== "range", min: spec.min, max: max,
      suggestedMax: ceiling,
      title: { display: !!(spec.xTitle || spec.yTitle), text: horizontal ? spec.xTitle : spec.yTitle, color: MUTED },
      ticks: { color: MUTED, precision: integers && !spec.percent && spec.min === undefined ? 0 : undefined,
               callback: function (v) { return spec.percent ? v + "%" : v; } },
      grace: "8%"
    };
    if (spec.kind === "pareto") {
      scales.y.position = "left";
      scales.y2 = { position: "right", min: 0, max: 100, grid: { display: false },
                    title: { display: true, text: spec.y2Title, color: MUTED },
                    ticks: { color: MUTED, stepSize: 25, callback: function (v) { return v + "%"; } } };
    }
    var datasets = spec.datasets.map(function (ds, i) { return dataset(spec, ds, i); });
    // Series names at the lines' ends: measured, wrapped onto two lines when long, never cut.
    var endRoom = 8;
    if (spec.kind === "line" && datasets.length > 1) {
      var most = Math.max(90, Math.min(170, boxWidth * 0.3));
      datasets.forEach(function (ds) {
        var end = lines(ds.label, most, 3, false, END_FONT);
        ds.endLines = Array.isArray(end) ? end : [end];
        ds.endLines.forEach(function (l) { endRoom = Math.max(endRoom, textWidth(l, END_FONT) + 14); });
      });
    } else if (horizontal) {
      endRoom = 46;
    }
    var chart = new Chart(canvas, {
      type: datasets[0].type === "line" ? "line" : "bar",
      data: { labels: shown, datasets: datasets },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false, indexAxis: horizontal ? "y" : "x",
        layout: { padding: { right: endRoom, top: 18 } },
        interaction: { mode: "nearest", intersect: true },
        scales: scales,
        plugins: {
          legend: { display: datasets.length > 1, position: "bottom",
                    labels: { usePointStyle: true, color: INK, boxWidth: 18, padding: 14 } },
          tooltip: {
            callbacks: {
              title: function (items) { return items.length ? spec.labels[items[0].dataIndex] : ""; },
              label: function (item) { return item.dataset.label + ": " + fmt(spec, item.raw); },
              footer: function (items) { return items.length && items[0].dataset.hrefs ? "click for the cases" : ""; }
            }
          }
        },
        onHover: function (event, elements) {
          event.native.target.style.cursor = elements.length ? "pointer" : "default";
        },
        onClick: function (event, elements) {
          if (!elements.length) return;
          var el = elements[0], ds = chart.data.datasets[el.datasetIndex];
          if (ds.hrefs && ds.hrefs[el.index]) window.location.href = ds.hrefs[el.index];
        }
      },
      plugins: [directLabels(spec)]
    });
    // The axes beside the plot (a Pareto has two) leave each name less room than estimated: when
    // Chart.js had to slant the names, wrap them again to the room it measured.
    var axis = chart.scales.x;
    if (!horizontal && level && !many && axis && axis.labelRotation > 0) {
      var room = (axis.right - axis.left) / Math.max(1, spec.labels.length) - 8;
      if (room < labelPx) {
        chart.data.labels = spec.labels.map(function (name) { return lines(name, room, 4, true); });
        chart.update();
      }
    }
    canvas.dataset.ready = "1";
  }

  specs.forEach(function (spec) {
    try { build(spec); } catch (err) { if (window.console) console.error("chart " + spec.id, err); }
  });
})();
