// lltrade telemetry dashboard: draws /history once, then appends /latest every second.
// No external resources: uPlot is served by the exporter from /static/vendor/uplot/.
(() => {
  "use strict";

  const REFRESH_MS = 1000;
  const MAX_POINTS = 600;
  const COLORS = {
    rate: "#58a6ff",
    p50: "#3fb950",
    p99: "#d29922",
    p999: "#f85149",
    daemon: "#58a6ff",
    core: "#bc8cff",
    host: "#7d8896",
  };

  // Column arrays, one per series, in uPlot's layout (x first).
  const data = {
    t: [], rate: [], p50: [], p99: [], p999: [], daemon: [], core: [], host: [],
  };
  const charts = {};
  let lastTs = null;
  let updates = 0;

  // -- formatting -------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function fmtNs(ns) {
    if (ns === null || ns === undefined) return "–";
    if (ns < 1e3) return `${ns.toFixed(0)} ns`;
    if (ns < 1e6) return `${(ns / 1e3).toFixed(ns < 1e4 ? 2 : 1)} µs`;
    if (ns < 1e9) return `${(ns / 1e6).toFixed(2)} ms`;
    return `${(ns / 1e9).toFixed(2)} s`;
  }

  function fmtNum(x, digits = 0) {
    if (x === null || x === undefined) return "–";
    return x.toLocaleString("en-US", { maximumFractionDigits: digits });
  }

  function fmtBytes(b) {
    if (b === null || b === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i += 1; }
    return `${b.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  const isPowerOf10 = (v) => v !== null && v > 0 && Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9;

  function fmtAxisUs(v) {
    if (v >= 1e6) return `${v / 1e6} s`;
    if (v >= 1e3) return `${v / 1e3} ms`;
    if (v >= 1) return `${v} µs`;
    return `${Math.round(v * 1e3)} ns`;
  }

  const pct = (r) => (r === null || r === undefined ? null : r * 100);
  const us = (ns) => (ns === null || ns === undefined || ns <= 0 ? null : ns / 1e3);

  function coreRatio(cpu) {
    const cores = cpu && cpu.core_ratio ? Object.values(cpu.core_ratio) : [];
    if (!cores.length) return null;
    return cores.reduce((a, b) => a + b, 0) / cores.length;
  }

  // -- data ------------------------------------------------------------------------------

  function pushRow(t, rec) {
    const lat = (rec && rec.latency_ns) || {};
    const cpu = (rec && rec.cpu) || {};
    data.t.push(t);
    data.rate.push(rec ? rec.orders_per_s : null);
    data.p50.push(rec ? us(lat.p50) : null);
    data.p99.push(rec ? us(lat.p99) : null);
    data.p999.push(rec ? us(lat.p99_9) : null);
    data.daemon.push(rec ? pct(cpu.daemon_ratio) : null);
    data.core.push(rec ? pct(coreRatio(cpu)) : null);
    data.host.push(rec ? pct(cpu.host_ratio) : null);
  }

  function push(rec) {
    if (!rec || rec.ts === null || rec.ts === undefined || rec.schema === null) return false;
    if (lastTs !== null && rec.ts <= lastTs) return false;
    if (rec.gap && data.t.length) pushRow(rec.ts - 1e-3, null); // break the lines at a restart
    pushRow(rec.ts, rec);
    lastTs = rec.ts;
    const excess = data.t.length - MAX_POINTS;
    if (excess > 0) for (const k of Object.keys(data)) data[k].splice(0, excess);
    return true;
  }

  // -- charts ----------------------------------------------------------------------------

  function axis(label, values) {
    const ax = {
      stroke: "#7d8896",
      grid: { stroke: "#263040", width: 1 },
      ticks: { stroke: "#263040", width: 1 },
      label,
      labelSize: 16,
      size: 56,
    };
    if (values) ax.values = values;
    return ax;
  }

  function line(label, color, extra) {
    return Object.assign({ label, stroke: color, width: 1.6, spanGaps: false }, extra || {});
  }

  function makeChart(id, series, yScale, yLabel, yValues) {
    const box = $(id).querySelector(".plot");
    const opts = {
      width: Math.max(240, box.clientWidth),
      height: 200,
      series: [{ label: "time" }, ...series],
      scales: { x: { time: true }, y: yScale },
      axes: [axis(null), axis(yLabel, yValues)],
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
    };
    return new uPlot(opts, [[]].concat(series.map(() => [])), box);
  }

  function createCharts() {
    charts.throughput = {
      id: "chart-throughput",
      cols: ["rate"],
      plot: makeChart(
        "chart-throughput",
        [line("orders/s", COLORS.rate, { fill: "rgba(88,166,255,0.12)", value: (u, v) => fmtNum(v, 1) })],
        { auto: true, range: (u, min, max) => [0, Math.max(1, max * 1.1)] },
        "orders/s",
      ),
    };
    const usValue = (u, v) => (v === null ? "–" : fmtNs(v * 1e3));
    charts.latency = {
      id: "chart-latency",
      cols: ["p50", "p99", "p999"],
      plot: makeChart(
        "chart-latency",
        [
          line("p50", COLORS.p50, { value: usValue }),
          line("p99", COLORS.p99, { value: usValue }),
          line("p99.9", COLORS.p999, { value: usValue }),
        ],
        { distr: 3, log: 10 },
        null, // the tick labels carry the unit
        (u, splits) => splits.map((v) => (isPowerOf10(v) ? fmtAxisUs(v) : "")),
      ),
    };
    const pctValue = (u, v) => (v === null ? "–" : `${v.toFixed(1)} %`);
    charts.cpu = {
      id: "chart-cpu",
      cols: ["daemon", "core", "host"],
      plot: makeChart(
        "chart-cpu",
        [
          line("daemon", COLORS.daemon, { value: pctValue }),
          line("its core", COLORS.core, { value: pctValue, dash: [4, 3] }),
          line("host", COLORS.host, { value: pctValue }),
        ],
        { auto: true, range: (u, min, max) => [0, Math.max(100, max)] },
        "%",
      ),
    };
    window.addEventListener("resize", () => {
      for (const c of Object.values(charts)) {
        const box = $(c.id).querySelector(".plot");
        c.plot.setSize({ width: Math.max(240, box.clientWidth), height: 200 });
      }
    });
  }

  function drawCharts() {
    for (const c of Object.values(charts)) {
      c.plot.setData([data.t.slice(), ...c.cols.map((k) => data[k].slice())]);
      const points = c.cols.reduce(
        (n, k) => Math.max(n, data[k].filter((v) => v !== null && v !== undefined).length), 0);
      $(c.id).dataset.points = String(points);
      if (data.t.length) c.plot.setLegend({ idx: data.t.length - 1 }); // latest values
    }
    const ready = Object.values(charts).every((c) => Number($(c.id).dataset.points) >= 2);
    if (ready) document.body.dataset.ready = "true";
  }

  // -- the rest of the page --------------------------------------------------------------

  function setText(id, text) {
    const el = $(id);
    if (el) el.textContent = text;
  }

  function fillTable(id, rows) {
    const body = $(id).querySelector("tbody");
    body.replaceChildren(
      ...rows.map((cells) => {
        const tr = document.createElement("tr");
        for (const c of cells) {
          const td = document.createElement("td");
          td.textContent = c;
          tr.appendChild(td);
        }
        return tr;
      }),
    );
  }

  function renderLatest(rec) {
    const status = rec.status || "unknown";
    const badge = $("status");
    badge.dataset.status = status;
    badge.textContent = status;
    badge.title = rec.reason || "";
    setText("clock", new Date().toLocaleTimeString());
    const svc = rec.service || {};
    const d = svc.daemon;
    setText("info-status", `${status}: ${rec.reason || ""}`);
    setText("info-pid", d ? String(d.pid) : "—");
    setText("info-start", d ? d.start_time : "—");
    setText("info-uptime", d ? `${fmtNum(d.uptime_s)} s` : "—");
    setText("info-restarts", String(svc.daemon_restarts ?? 0));

    if (rec.schema === null || rec.schema === undefined) return;
    const lat = rec.latency_ns || {};
    setText("kpi-rate", fmtNum(rec.orders_per_s, 1));
    setText("kpi-rate-start", `since start ${fmtNum(rec.orders_per_s_since_start, 1)}`);
    setText("kpi-avg", fmtNs(lat.avg));
    setText("kpi-p50", fmtNs(lat.p50));
    setText("kpi-p99", fmtNs(lat.p99));
    setText("kpi-p999", fmtNs(lat.p99_9));
    setText("kpi-max", fmtNs(lat.max));
    const cpu = rec.cpu || {};
    setText("kpi-cpu", cpu.daemon_ratio === null || cpu.daemon_ratio === undefined
      ? "–" : `${(cpu.daemon_ratio * 100).toFixed(0)} %`);
    const cores = cpu.daemon_cores || [];
    setText("kpi-cpu-sub", cpu.daemon_pinned ? `pinned to core ${cores.join(",")}`
      : `host ${cpu.host_ratio === null || cpu.host_ratio === undefined ? "–" : (cpu.host_ratio * 100).toFixed(0)} %`);
    const mem = rec.memory || {};
    setText("kpi-rss", fmtBytes(mem.daemon_rss_bytes));
    setText("kpi-host-mem", `host avail ${fmtBytes(mem.host_available_bytes)}`);

    const rates = rec.counter_rates || {};
    fillTable("counters", Object.entries(rec.counters || {}).map(
      ([k, v]) => [k, fmtNum(v), fmtNum(rates[k], 1)]));
    fillTable("gauges", Object.entries(rec.gauges || {}).map(([k, v]) => [k, fmtNum(v)]));
    fillTable("since-start", Object.entries(rec.histograms || {}).map(([k, h]) => {
      const s = h.since_start || {};
      const f = k.endsWith("_ns") ? fmtNs : (v) => fmtNum(v, 1);
      return [k, fmtNum(s.count), f(s.avg), f(s.p50), f(s.p99), f(s.p99_9), f(s.max)];
    }));
  }

  function showError(message) {
    const el = $("error");
    if (message) { el.textContent = message; el.hidden = false; } else { el.hidden = true; }
  }

  async function getJSON(url) {
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.json();
  }

  async function poll() {
    try {
      const rec = await getJSON("/latest");
      if (push(rec)) drawCharts();
      renderLatest(rec);
      updates += 1;
      document.body.dataset.updates = String(updates);
      showError(null);
    } catch (err) {
      $("status").dataset.status = "offline";
      setText("status", "offline");
      showError(String(err));
    } finally {
      setTimeout(poll, REFRESH_MS);
    }
  }

  async function start() {
    createCharts();
    try {
      const history = await getJSON(`/history?limit=${MAX_POINTS}`);
      for (const rec of history.records || []) push(rec);
      drawCharts();
    } catch (err) {
      showError(String(err));
    }
    poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
