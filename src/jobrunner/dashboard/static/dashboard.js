// jobrunner dashboard behaviour. Loaded as a file (the CSP forbids inline script); every value
// from the server is written with textContent or setAttribute, never as HTML.
(function () {
  "use strict";
  var body = document.body;
  var refresh = Math.max(parseInt(body.getAttribute("data-refresh"), 10) || 5000, 100);
  var SVG = "http://www.w3.org/2000/svg";

  // Confirmation for every action form.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var message = form.getAttribute && form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      });
  }

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (cls) { node.className = cls; }
    return node;
  }

  function badge(status) {
    var span = el("span", status === "processing" ? "running" : status, "badge badge-" + status);
    span.setAttribute("data-status", status);
    return span;
  }

  // -- overview ----------------------------------------------------------------------------
  function drawChart(svg, ok, fail) {
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var W = 600, H = 160, top = 12, bottom = 18, n = ok.length || 60;
    var max = 1;
    for (var i = 0; i < n; i++) { max = Math.max(max, (ok[i] ? ok[i][1] : 0) + (fail[i] ? fail[i][1] : 0)); }
    var slot = W / n, barW = Math.max(slot - 2, 1), scale = (H - top - bottom) / max;
    var axis = document.createElementNS(SVG, "line");
    axis.setAttribute("x1", "0"); axis.setAttribute("x2", String(W));
    axis.setAttribute("y1", String(H - bottom)); axis.setAttribute("y2", String(H - bottom));
    axis.setAttribute("class", "axis");
    svg.appendChild(axis);
    for (var j = 0; j < n; j++) {
      var good = ok[j] ? ok[j][1] : 0, bad = fail[j] ? fail[j][1] : 0;
      var x = j * slot + 1, y = H - bottom;
      [[good, "bar-ok"], [bad, "bar-fail"]].forEach(function (part) {
        if (!part[0]) { return; }
        var h = Math.max(part[0] * scale, 1);
        y -= h;
        var rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("x", x.toFixed(1)); rect.setAttribute("y", y.toFixed(1));
        rect.setAttribute("width", barW.toFixed(1)); rect.setAttribute("height", h.toFixed(1));
        rect.setAttribute("class", part[1]);
        var title = document.createElementNS(SVG, "title");
        title.textContent = (ok[j] ? ok[j][0].slice(11, 16) : "") + " UTC: " + part[0];
        rect.appendChild(title);
        svg.appendChild(rect);
      });
    }
    var label = function (text, xPos, anchor) {
      var t = document.createElementNS(SVG, "text");
      t.setAttribute("x", String(xPos)); t.setAttribute("y", String(H - 4));
      t.setAttribute("text-anchor", anchor);
      t.textContent = text;
      svg.appendChild(t);
    };
    label("-60 min", 2, "start"); label("-30", W / 2, "middle"); label("now", W - 2, "end");
    var peak = document.createElementNS(SVG, "text");
    peak.setAttribute("x", "2"); peak.setAttribute("y", "10");
    peak.textContent = "max " + max + "/min";
    svg.appendChild(peak);
  }

  function updateRecent(rows) {
    var tbody = document.querySelector("#recent-jobs tbody");
    if (!tbody) { return; }
    var fresh = document.createDocumentFragment();
    rows.forEach(function (job) {
      var tr = el("tr");
      var name = el("td"); var a = el("a", job.name); a.setAttribute("href", job.url); name.appendChild(a);
      tr.appendChild(name);
      var id = el("td"); id.appendChild(el("code", String(job.job_id).slice(0, 8))); tr.appendChild(id);
      var st = el("td"); st.appendChild(badge(job.status)); tr.appendChild(st);
      var rt = el("td"); rt.appendChild(el("span", job.runner_type, "runner runner-" + job.runner_type)); tr.appendChild(rt);
      tr.appendChild(el("td", job.duration));
      tr.appendChild(el("td", job.started));
      tr.appendChild(el("td", job.ended));
      fresh.appendChild(tr);
    });
    if (!rows.length) {
      var empty = el("tr", null, "empty"); var td = el("td", "No jobs yet.", "muted");
      td.setAttribute("colspan", "7"); empty.appendChild(td); fresh.appendChild(empty);
    }
    tbody.replaceChildren(fresh);
  }

  function updateRunners(map) {
    var tbody = document.querySelector("#runner-types tbody");
    if (!tbody) { return; }
    var fresh = document.createDocumentFragment();
    Object.keys(map).sort().forEach(function (name) {
      var tr = el("tr"); var td = el("td");
      td.appendChild(el("span", name, "runner runner-" + name)); tr.appendChild(td);
      tr.appendChild(el("td", map[name], "num")); fresh.appendChild(tr);
    });
    tbody.replaceChildren(fresh);
  }

  function overview() {
    var indicator = document.getElementById("live-indicator");
    var api = indicator.getAttribute("data-api");
    var svg = document.getElementById("throughput");
    function tick() {
      getJSON(api).then(function (m) {
        var values = Object.assign({}, m.by_status, {
          total: m.total, failed_last_24h: m.failed_last_24h,
          success_rate_text: m.success_rate_text, oldest_queued_age: m.oldest_queued_age
        });
        document.querySelectorAll("[data-metric]").forEach(function (node) {
          var key = node.getAttribute("data-metric");
          if (key in values) { node.textContent = String(values[key]); }
        });
        drawChart(svg, m.throughput, m.failures);
        updateRecent(m.recent);
        updateRunners(m.by_runner_type);
        indicator.classList.remove("stale");
        indicator.setAttribute("data-updated", new Date().toISOString());
      }).catch(function () {
        indicator.classList.add("stale");
      }).then(function () {
        window.setTimeout(tick, refresh);
      });
    }
    tick();
  }

  // -- a live job page: follow status and progress, reload once it is final -----------------
  function jobPage() {
    var summary = document.getElementById("job-summary");
    var api = summary && summary.getAttribute("data-live-api");
    if (!api) { return; }
    var status = summary.getAttribute("data-status");
    function tick() {
      getJSON(api).then(function (job) {
        var bar = document.getElementById("progress");
        bar.value = job.progress;
        document.getElementById("progress-text").textContent =
          job.progress + "%" + (job.progress_message ? " · " + job.progress_message : "");
        document.getElementById("attempts").textContent = job.attempts + " of " + job.max_attempts;
        if (job.status !== status) {
          window.location.reload();
          return;
        }
        window.setTimeout(tick, refresh);
      }).catch(function () { window.setTimeout(tick, refresh * 2); });
    }
    window.setTimeout(tick, refresh);
  }

  var page = body.getAttribute("data-page");
  if (page === "overview" && document.getElementById("live-indicator")) { overview(); }
  if (document.getElementById("job-summary")) { jobPage(); }
})();
