// shadowdiff report: live refresh of page fragments, charts (uPlot), and small conveniences. No inline
// scripts: the Content-Security-Policy allows only this file and the vendored chart library.
(function () {
  "use strict";

  const REFRESH_MS = 5000;
  const CHART_REFRESH_MS = 10000;

  function visible() {
    return document.visibilityState !== "hidden";
  }

  // Selects that submit their form when changed (run and time range).
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () {
      select.form.submit();
    });
  });

  // Forms that ask before doing something that cannot be undone (also those a refresh swapped in).
  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.hasAttribute("data-confirm")) {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        event.preventDefault();
      }
    }
  });

  // The "hide noise" switch: a class on the field table's container, remembered across pages.
  const hideNoise = document.querySelector("[data-hide-noise]");
  const fields = document.getElementById("fields");
  if (hideNoise && fields) {
    const remembered = window.localStorage.getItem("shadowdiff.hideNoise");
    if (remembered !== null && !new URLSearchParams(window.location.search).has("hide_noise")) {
      hideNoise.checked = remembered === "1";
    }
    const apply = function () {
      fields.classList.toggle("hide-noise", hideNoise.checked);
      window.localStorage.setItem("shadowdiff.hideNoise", hideNoise.checked ? "1" : "0");
    };
    hideNoise.addEventListener("change", apply);
    apply();
  }

  // Fragments that refresh themselves: the server renders (and escapes) them; this only swaps them in, and
  // only when they changed (the server answers 304 to the ETag of what the page already shows).
  document.querySelectorAll("[data-refresh]").forEach(function (element) {
    const url = element.getAttribute("data-refresh");
    let etag = element.getAttribute("data-etag") || "";
    setInterval(function () {
      if (!visible()) return;
      const headers = { Accept: "text/html" };
      if (etag) headers["If-None-Match"] = etag;
      fetch(url, { credentials: "same-origin", cache: "no-store", headers: headers })
        .then(function (response) {
          if (!response.ok) return null;
          etag = response.headers.get("ETag") || "";
          return response.text();
        })
        .then(function (html) {
          if (html === null) return;
          // A change opened by the reader stays open, and a form being filled in is not swapped away.
          const active = document.activeElement;
          if (active && element.contains(active) && active.form) return;
          const open = Array.from(element.querySelectorAll("details[open][id]")).map(function (d) { return d.id; });
          element.innerHTML = html;
          open.forEach(function (id) {
            const details = document.getElementById(id);
            if (details) details.open = true;
          });
        })
        .catch(function () {});
    }, REFRESH_MS);
  });

  // An empty report reloads once the first run appears.
  document.querySelectorAll("[data-refresh-reload]").forEach(function (element) {
    const url = element.getAttribute("data-refresh-reload");
    setInterval(function () {
      if (!visible()) return;
      fetch(url, { credentials: "same-origin" })
        .then(function (response) {
          return response.ok ? response.json() : [];
        })
        .then(function (runs) {
          if (Array.isArray(runs) && runs.length > 0) window.location.reload();
        })
        .catch(function () {});
    }, REFRESH_MS);
  });

  // Charts of an endpoint over time, from its timeline (one point per minute).
  const COLORS = { primary: "#3b5bdb", secondary: "#868e96", candidate: "#e8590c", diff: "#c92a2a" };

  function latencyData(points) {
    const x = points.map(function (p) { return p.minute * 60; });
    const series = [x];
    ["primary", "secondary", "candidate"].forEach(function (target) {
      series.push(points.map(function (p) { return p.latency[target].samples ? p.latency[target].p50_ms : null; }));
      series.push(points.map(function (p) { return p.latency[target].samples ? p.latency[target].p99_ms : null; }));
    });
    return series;
  }

  function diffRateData(points) {
    return [
      points.map(function (p) { return p.minute * 60; }),
      points.map(function (p) { return p.diff_rate * 100; }),
      points.map(function (p) { return p.requests; }),
    ];
  }

  // A few points spread over minutes, not over years: at least ten minutes of axis. The bounds come from the
  // data, because uPlot widens a single point's range by a day counted in milliseconds (years, in seconds).
  function minuteRange(u, min, max) {
    const xs = u.data && u.data[0];
    if (xs && xs.length > 0) {
      min = xs[0];
      max = xs[xs.length - 1];
    }
    if (min == null || max == null) return [min, max];
    const span = Math.max(max - min, 600);
    const middle = (min + max) / 2;
    return [middle - span / 2, middle + span / 2];
  }

  function latencyOptions(width) {
    const series = [{}];
    ["primary", "secondary", "candidate"].forEach(function (target) {
      series.push({ label: target + " p50", stroke: COLORS[target], width: 1.5, dash: [5, 4], value: function (u, v) { return v == null ? "–" : v.toFixed(1) + " ms"; } });
      series.push({ label: target + " p99", stroke: COLORS[target], width: 2, value: function (u, v) { return v == null ? "–" : v.toFixed(1) + " ms"; } });
    });
    return {
      width: width,
      height: 240,
      series: series,
      axes: [{}, { label: "ms", size: 60 }],
      scales: { x: { time: true, range: minuteRange } },
    };
  }

  function diffRateOptions(width) {
    return {
      width: width,
      height: 240,
      series: [
        {},
        { label: "diff rate", stroke: COLORS.diff, fill: "rgba(201,42,42,0.12)", width: 2, scale: "%", value: function (u, v) { return v == null ? "–" : v.toFixed(2) + "%"; } },
        { label: "requests", stroke: "#868e96", width: 1, scale: "n" },
      ],
      axes: [{}, { scale: "%", label: "% failing", size: 60 }, { scale: "n", side: 1, label: "requests", grid: { show: false }, size: 60 }],
      scales: { x: { time: true, range: minuteRange }, "%": { range: [0, 100] } },
    };
  }

  document.querySelectorAll("[data-chart]").forEach(function (element) {
    if (typeof window.uPlot !== "function") return;
    const kind = element.getAttribute("data-chart");
    const url = element.getAttribute("data-src");
    let plot = null;
    const draw = function () {
      fetch(url, { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (points) {
          if (!points) return;
          if (points.length === 0) {
            if (!plot) {
              element.textContent = "";
              const note = document.createElement("div");
              note.className = "empty-chart";
              note.textContent = "No data in this time range yet.";
              element.appendChild(note);
            }
            return;
          }
          const data = kind === "latency" ? latencyData(points) : diffRateData(points);
          if (plot) {
            plot.setData(data);
          } else {
            element.textContent = "";
            const width = Math.max(element.clientWidth, 320);
            const options = kind === "latency" ? latencyOptions(width) : diffRateOptions(width);
            plot = new window.uPlot(options, data, element);
          }
        })
        .catch(function () {});
    };
    draw();
    setInterval(function () { if (visible()) draw(); }, CHART_REFRESH_MS);
    window.addEventListener("resize", function () {
      if (plot) plot.setSize({ width: Math.max(element.clientWidth, 320), height: 240 });
    });
  });
})();
