// costline dashboard: draws each chart's rows (embedded JSON) with Plotly, filtered by the date range.
// Renderers by chart kind: lines, band, stacked_bar, waterfall, table (see costline/dashboards/charts.py).
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("costline-data").textContent);
  var TIER_COLORS = {
    cache: "#8e44ad", student: "#16a085", budget: "#2f6fde", mid: "#f39c12",
    upper: "#d35400", frontier: "#c0392b", unknown: "#7f8c8d"
  };
  var PALETTE = ["#2f6fde", "#16a085", "#d35400", "#8e44ad", "#c0392b", "#f39c12", "#2c3e50", "#7f8c8d",
                 "#27ae60", "#e84393", "#0984e3", "#6c5ce7"];
  var CONFIG = { displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
  var BASE_LAYOUT = {
    margin: { l: 60, r: 16, t: 8, b: 40 }, height: 320, hovermode: "closest",
    legend: { orientation: "h", y: -0.18 }, font: { size: 12 },
    paper_bgcolor: "#fff", plot_bgcolor: "#fff"
  };

  function plot(div, traces, layout) {
    layout.width = div.clientWidth || undefined;
    return Plotly.react(div, traces, layout, CONFIG);
  }

  // Plotly reads trace names, tick labels and annotations as pseudo-HTML (<a href>, <b>, <br>...);
  // labels come from the lake (tenants, tiers, subtypes): escaped, they are drawn as the text they are.
  function text(v) {
    return String(v).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }
  // Labels from the lake index only Maps and own properties: a tenant, service or tier named "constructor",
  // "__proto__", "toString"... is a name like any other, never a key of Object.prototype.
  var own = function (o, k) { return Object.prototype.hasOwnProperty.call(o, k); };
  function colorFor(key, i) { return own(TIER_COLORS, key) ? TIER_COLORS[key] : PALETTE[i % PALETTE.length]; }
  function day(v) { return v == null ? "" : String(v).slice(0, 10); }
  function merge(a, b) { var o = {}, k; for (k in a) o[k] = a[k]; for (k in b) o[k] = b[k]; return o; }

  function records(chart) {
    var cols = chart.columns;
    return chart.rows.map(function (row) {
      var o = Object.create(null); for (var i = 0; i < cols.length; i++) o[cols[i]] = row[i]; return o;
    });
  }

  // -> { keys: sorted labels (escaped), groups: Map label -> rows }
  function groupBy(rows, key) {
    var groups = new Map(), order = [];
    rows.forEach(function (r) {
      var k = r[key] == null ? "(none)" : text(r[key]);
      if (!groups.has(k)) { groups.set(k, []); order.push(k); }
      groups.get(k).push(r);
    });
    order.sort();
    return { keys: order, groups: groups };
  }

  function yaxis(opts, extra) {
    return merge({ title: { text: opts.y_title || "" }, tickformat: opts.y_format || "",
                   type: opts.log_y ? "log" : "linear", automargin: true, gridcolor: "#eef1f5" }, extra || {});
  }

  // A cost chart's counts beside its USD (options.lower_bound: column -> [one, many]): where one is above 0 the
  // point's USD is a lower bound (calls of unknown models priced $0, NaN/infinite costs left out). -> "" or the text.
  function lowerBound(o, r) {
    var lb = o.lower_bound, parts = [];
    if (!lb) return "";
    Object.keys(lb).forEach(function (c) {
      var n = Number(r[c]) || 0;
      if (n > 0) parts.push(n + " " + lb[c][n === 1 ? 0 : 1]);
    });
    return parts.length ? "lower bound: " + parts.join(", ") : "";
  }

  // The note under a cost chart whose selected rows hold lower bounds: the counts, and the query that lists them;
  // and, whatever the range, the lake's requests in no day (chart.undated: ts NULL, a span time the processor
  // could not use), which no chart can draw: their count, their cost and the query that lists them.
  function caveatNote(chart, rows) {
    var o = chart.options, el = document.getElementById("caveat-" + chart.name);
    if (!el || !o.lower_bound) return;
    var totals = {}, any = false, parts = [], u = chart.undated;
    Object.keys(o.lower_bound).forEach(function (c) {
      totals[c] = rows.reduce(function (t, r) { return t + (Number(r[c]) || 0); }, 0);
      if (totals[c] > 0) any = true;
    });
    if (any) {
      var from = fromInput.value, to = toInput.value, where = [];
      if (isDay(from)) where.push("ts >= TIMESTAMP '" + from + "'");
      if (isDay(to)) where.push("ts < TIMESTAMP '" + to + "' + INTERVAL 1 DAY");
      var code = document.createElement("code");
      code.id = "caveat-sql-" + chart.name;
      code.textContent = 'costline sql --max-rows 0 "' + o.lower_bound_sql.replace(
        "{where}", where.length ? " AND " + where.join(" AND ") : "") + '"';
      parts.push("Lower bound in the selected range: " + lowerBound(o, totals).replace(/^lower bound: /, "") +
                 " (the marked points). List them with: ", code);
    }
    if (u && Number(u.requests) > 0 && o.undated_sql) {
      var n = Number(u.requests), undated = document.createElement("code");
      undated.id = "caveat-undated-sql-" + chart.name;
      undated.textContent = 'costline sql --max-rows 0 "' + o.undated_sql + '"';
      parts.push((parts.length ? " " : "") + "Lower bound in any range: " + n + (n === 1 ? " request" : " requests") +
                 " costing $" + (Number(u.cost_usd) || 0).toFixed(4) + (n === 1 ? " is" : " are") + " in no day, " +
                 "left out of every chart (a span time the processor could not use: a client clock more than a " +
                 "day ahead, or before 2000; data_quality names ts:). List them with: ", undated);
    }
    if (!parts.length) return;
    el.replaceChildren.apply(el, parts);
    el.hidden = false;
  }

  // --- renderers: (div, rows, chart) -> number of data points drawn --------------------------------
  var RENDER = {};

  RENDER.lines = function (div, rows, chart) {
    var o = chart.options, ys = o.y, g = groupBy(rows, o.series), traces = [], n = 0;
    g.keys.forEach(function (key, i) {
      ys.forEach(function (ycol, j) {
        var pts = g.groups.get(key).filter(function (r) { return r[ycol] != null && (!o.log_y || r[ycol] > 0); });
        if (!pts.length) return;
        n += pts.length;
        var notes = pts.map(function (r) { return lowerBound(o, r); });
        var trace = {
          type: "scatter", mode: "lines+markers", name: ys.length > 1 ? key + " · " + ycol.replace(/_/g, " ") : key,
          // Plotly keys its legend groups by name in a plain object: an index, never the label
          legendgroup: "series-" + i, x: pts.map(function (r) { return r[chart.x]; }),
          y: pts.map(function (r) { return r[ycol]; }),
          line: { color: colorFor(key, i), dash: j === 0 ? "solid" : "dash", width: 2 },
          marker: { size: 5 }
        };
        if (o.lower_bound) {
          // a lower bound (unknown models, costs left out): an open, larger marker, and why on hover
          trace.marker = { size: notes.map(function (t) { return t ? 10 : 5; }),
                           symbol: notes.map(function (t) { return t ? "triangle-up-open" : "circle"; }) };
          trace.text = notes;
          trace.hovertemplate = "%{fullData.name}<br>%{x}<br>%{y}<br>%{text}<extra></extra>";
        }
        traces.push(trace);
      });
    });
    caveatNote(chart, rows);
    var marks = ((DATA.marks || {})[o.marks] || []).filter(function (m) { return inRange(m.ts); });
    plot(div, traces, merge(BASE_LAYOUT, {
      yaxis: yaxis(o), xaxis: { type: "date", automargin: true },
      // Policy promotions / rollbacks: a dotted vertical line each, labelled with the action.
      shapes: marks.map(function (m) {
        return { type: "line", xref: "x", yref: "paper", x0: m.ts, x1: m.ts, y0: 0, y1: 1,
                 line: { color: m.action === "rollback" ? "#c0392b" : "#7f8c8d", dash: "dot", width: 1 } };
      }),
      annotations: marks.map(function (m) {
        return { x: m.ts, xref: "x", y: 1, yref: "paper", yanchor: "bottom", showarrow: false,
                 text: m.action === "rollback" ? "rollback" : "promote", font: { size: 10, color: "#555" } };
      })
    }));
    return n;
  };

  // Facets drawn at most (options.max_facets): the ones with the largest sum of options.rank over the
  // selected rows (ties: by name), drawn in name order; the others are counted in a note under the chart,
  // with the `costline sql` query (options.more_sql) that lists them.
  function topFacets(g, o) {
    var keys = g.keys, max = o.max_facets;
    if (!max || keys.length <= max) return { shown: keys, left: [] };
    var total = new Map();
    keys.forEach(function (key) {
      total.set(key, g.groups.get(key).reduce(function (t, r) { return t + (Number(r[o.rank]) || 0); }, 0));
    });
    var ranked = keys.slice().sort(function (a, b) {
      return total.get(b) - total.get(a) || (a < b ? -1 : a > b ? 1 : 0);
    });
    return { shown: ranked.slice(0, max).sort(), left: ranked.slice(max) };
  }

  function isDay(v) {
    if (!/^\d{4}-\d\d-\d\d$/.test(v || "")) return false;
    var d = new Date(v + "T00:00:00Z");
    return !isNaN(d.getTime()) && d.toISOString().slice(0, 10) === v;
  }

  // The facets the build left out of the page (the query ranked them over the window and kept the top
  // max_facets: chart.facets_total counts them all): -> { carried: facets on the page, total } or null.
  function notCarried(chart) {
    if (chart.facets_total == null) return null;
    var key = chart.options.facet, seen = new Set();
    records(chart).forEach(function (r) { seen.add(r[key] == null ? "(none)" : text(r[key])); });
    return chart.facets_total > seen.size ? { carried: seen.size, total: chart.facets_total } : null;
  }

  function leftOutNote(chart, shown, left, g) {
    var o = chart.options, el = document.getElementById("more-" + chart.name), nc = notCarried(chart);
    if (!el || (!left.length && !nc)) return;
    var what = o.facet_noun || o.facet + "s", from = fromInput.value, to = toInput.value, where = [];
    var rank = o.rank_noun || o.rank;
    var flagged = left.filter(function (key) { return g.groups.get(key).some(function (r) { return r[o.flag]; }); });
    if (isDay(from)) where.push(chart.x + " >= TIMESTAMP '" + from + "'");
    if (isDay(to)) where.push(chart.x + " < TIMESTAMP '" + to + "' + INTERVAL 1 DAY");
    var sql = o.more_sql.replace("{where}", where.length ? " WHERE " + where.join(" AND ") : "")
                        .replace("{shown}", String(shown.length));
    var code = document.createElement("code");
    code.id = "more-sql-" + chart.name;
    code.textContent = 'costline sql --max-rows 0 "' + sql + '"';
    var said = "Showing the " + shown.length + " " + what + " with the most " + rank + " in the selected range";
    if (left.length) {
      said += "; " + left.length + " more " + (left.length === 1 ? "is" : "are") + " left out" +
              (flagged.length ? " (" + flagged.length + " of them with hours under the alert band)" : "");
    }
    if (nc) {
      said += (left.length ? ", and" : ";") + " the page carries only the " + nc.carried + " of the window's " +
              nc.total + " " + what + " with the most " + rank;
    }
    el.replaceChildren(said + ". List them with: ", code);
    el.hidden = false;
  }

  RENDER.band = function (div, rows, chart) {
    var o = chart.options, g = groupBy(rows, o.facet), traces = [], annotations = [], n = 0;
    var top = topFacets(g, o), k = top.shown.length;
    leftOutNote(chart, top.shown, top.left, g);
    var layout = merge(BASE_LAYOUT, {
      height: Math.max(220, 190 * k + 60), showlegend: false,
      grid: { rows: k, columns: 1, pattern: "coupled", roworder: "top to bottom", ygap: 0.25 },
      xaxis: { type: "date", automargin: true }
    });
    top.shown.forEach(function (key, i) {
      var pts = g.groups.get(key), ax = i === 0 ? "y" : "y" + (i + 1), color = colorFor(key, i);
      var xs = pts.map(function (r) { return r[chart.x]; });
      var col = function (c) { return pts.map(function (r) { return r[c]; }); };
      traces.push({ type: "scatter", mode: "lines", name: key + " alert threshold", x: xs, y: col(o.low), yaxis: ax,
                    line: { color: "rgba(198,40,40,0.55)", width: 1, dash: "dot" }, hoverinfo: "x+y+name" });
      traces.push({ type: "scatter", mode: "lines", name: key + " 7-day average", x: xs, y: col(o.avg), yaxis: ax,
                    fill: "tonexty", fillcolor: "rgba(198,40,40,0.08)",
                    line: { color: color, width: 1.5, dash: "dash" } });
      traces.push({ type: "scatter", mode: "lines", name: key + " hit rate", x: xs, y: col(o.y), yaxis: ax,
                    line: { color: color, width: 1.5 } });
      var bad = pts.filter(function (r) { return r[o.flag]; });
      if (bad.length) {
        traces.push({ type: "scatter", mode: "markers", name: key + " under the band", yaxis: ax,
                      x: bad.map(function (r) { return r[chart.x]; }), y: bad.map(function (r) { return r[o.y]; }),
                      marker: { color: "#c62828", size: 7 } });
      }
      n += pts.filter(function (r) { return r[o.y] != null; }).length;
      layout["yaxis" + (i === 0 ? "" : i + 1)] = yaxis(o, { title: { text: key }, range: [0, 1.02] });
    });
    layout.annotations = annotations;
    plot(div, traces, layout);
    return n;
  };

  RENDER.stacked_bar = function (div, rows, chart) {
    var o = chart.options, g = groupBy(rows, o.series), traces = [], n = 0;
    caveatNote(chart, rows);
    g.keys.forEach(function (key, i) {
      var pts = g.groups.get(key), notes = pts.map(function (r) { return lowerBound(o, r); });
      n += pts.length;
      var trace = { type: "bar", name: key, x: pts.map(function (r) { return r[chart.x]; }),
                    y: pts.map(function (r) { return r[o.y]; }), marker: { color: colorFor(key, i) } };
      if (o.lower_bound) {
        // a lower bound (unknown models, costs left out): hatched, and why on hover
        trace.marker.pattern = { shape: notes.map(function (t) { return t ? "/" : ""; }) };
        trace.text = notes;
        trace.textposition = "none";
        trace.hovertemplate = "%{fullData.name}<br>%{x}<br>%{y}<br>%{text}<extra></extra>";
      }
      traces.push(trace);
    });
    plot(div, traces, merge(BASE_LAYOUT, { barmode: "stack", yaxis: yaxis(o),
                                           xaxis: { type: "date", automargin: true } }));
    return n;
  };

  RENDER.waterfall = function (div, rows, chart) {
    var o = chart.options, level = new Map(), order = new Map();
    rows.forEach(function (r) {
      var s = String(r[o.stage]);
      level.set(s, (level.get(s) || 0) + (r[o.y] || 0));
      order.set(s, r[o.step]);
    });
    var stages = Array.from(level.keys()).sort(function (a, b) { return order.get(a) - order.get(b); });
    if (!stages.length) return 0;
    // Bars at x = 0, 1, 2... labelled with tick texts: Plotly keys a category axis's labels in a plain
    // object, where a stage named "constructor" would not be a category of its own.
    var x = [], labels = [], y = [], measure = [], notes = [], base = level.get(stages[0]), prev = 0;
    var money = function (v) { return (v < 0 ? "−$" : "$") + Math.abs(v).toFixed(2); };
    stages.forEach(function (s, i) {
      var now = level.get(s), v = i === 0 ? now : now - prev;
      x.push(i); labels.push(i === 0 ? text(s) + " (all frontier)" : text(s)); y.push(v);
      measure.push(i === 0 ? "absolute" : "relative");
      notes.push({ x: i, y: Math.max(prev, now), showarrow: false, yanchor: "bottom", font: { size: 11 },
                   text: (i > 0 && v > 0 ? "+" : "") + money(v) +
                         (i > 0 && base > 0 ? " (" + (v > 0 ? "+" : "") + (100 * v / base).toFixed(0) + "%)" : "") });
      prev = now;
    });
    x.push(stages.length); labels.push("actual"); y.push(prev); measure.push("total");
    notes.push({ x: stages.length, y: prev, showarrow: false, yanchor: "bottom", font: { size: 11 },
                 text: money(prev) + (base > 0 ? " (" + (100 * prev / base).toFixed(0) + "%)" : "") });
    plot(div, [{
      type: "waterfall", x: x, y: y, measure: measure, customdata: labels,
      hovertemplate: "%{customdata}<br>%{y}<extra></extra>",
      connector: { line: { color: "#aab2bf" } },
      decreasing: { marker: { color: "#16a085" } }, increasing: { marker: { color: "#c0392b" } },
      totals: { marker: { color: "#2f6fde" } }
    }], merge(BASE_LAYOUT, { showlegend: false, yaxis: yaxis(o), annotations: notes,
                             xaxis: { tickmode: "array", tickvals: x, ticktext: labels, automargin: true },
                             margin: { l: 60, r: 16, t: 28, b: 40 } }));
    return x.length;
  };

  RENDER.table = function (div, rows, chart) {
    // columns empty in every shown row are left out; timestamps read "YYYY-MM-DD HH:MM:SS"
    var cols = chart.columns.filter(function (c) { return rows.some(function (r) { return r[c] != null; }); });
    var table = document.createElement("table");
    table.className = "alerts";
    var head = table.createTHead().insertRow();
    cols.forEach(function (c) { var th = document.createElement("th"); th.textContent = c; head.appendChild(th); });
    var body = table.createTBody();
    var firing = function (r) {
      if ("state" in r) return String(r.state).toLowerCase() === "firing";
      if ("status" in r) return String(r.status).toLowerCase() === "firing";
      return "resolved_at" in r && r.resolved_at == null;
    };
    rows.slice().sort(function (a, b) { return firing(b) - firing(a); }).forEach(function (r) {
      var tr = body.insertRow();
      if (firing(r)) tr.className = "firing";
      cols.forEach(function (c) {
        var v = r[c] == null ? "" : String(r[c]);
        tr.insertCell().textContent = /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(v) ? v.replace("T", " ") : v;
      });
    });
    var wrap = document.createElement("div");
    wrap.className = "scroll";
    wrap.appendChild(table);
    div.replaceChildren(wrap);
    return rows.length;
  };

  // --- the date range --------------------------------------------------------------------------------
  var fromInput = document.getElementById("date-from"), toInput = document.getElementById("date-to");
  var allDays = [];
  DATA.charts.forEach(function (c) {
    var xi = c.columns.indexOf(c.x);
    if (xi < 0) return;
    c.rows.forEach(function (row) { if (row[xi] != null) allDays.push(day(row[xi])); });
  });
  allDays.sort();
  var minDay = allDays.length ? allDays[0] : "", maxDay = allDays.length ? allDays[allDays.length - 1] : "";
  // "last day" / "last 7 days" end at the newest day with data, but never after the day the page was
  // built: a span stamped in the future (a client's skewed clock) must not make them show an empty week.
  var builtDay = day(DATA.built_at), lastDay = builtDay && maxDay > builtDay ? builtDay : maxDay;
  [fromInput, toInput].forEach(function (el) { el.min = minDay; el.max = maxDay; });
  // The page opens on the window its queries kept to ([dashboard] days) up to lastDay: one span stamped years
  // off (a client's skewed clock) must not stretch the default view over decades; the header counts the rows
  // outside the range shown, and "all" shows them.
  var windowDays = (DATA.window && DATA.window.days) || 0;
  var defaultFrom = minDay, defaultTo = lastDay || maxDay;
  if (windowDays > 0 && lastDay) {
    defaultFrom = shiftDay(lastDay, 1 - windowDays);
    if (defaultFrom < minDay) defaultFrom = minDay;
  }

  function shiftDay(iso, days) {
    var d = new Date(iso + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + days);
    return d.toISOString().slice(0, 10);
  }

  function rangeNote() {
    var el = document.getElementById("range-note"), before = 0, after = 0, from = fromInput.value, to = toInput.value;
    if (!el) return;
    DATA.charts.forEach(function (c) {
      var xi = c.columns.indexOf(c.x);
      if (xi < 0) return;
      c.rows.forEach(function (row) {
        var d = row[xi] == null ? "" : day(row[xi]);
        if (!d) return;
        if (from && d < from) before++; else if (to && d > to) after++;
      });
    });
    var n = before + after;
    el.textContent = n ? n + (n === 1 ? " row lies" : " rows lie") + " outside the range shown (" +
      [before ? before + " before " + from : "", after ? after + " after " + to : ""].filter(Boolean).join(", ") +
      "; dates from " + minDay + " to " + maxDay + "): \"all\" shows " + (n === 1 ? "it" : "them") : "";
    el.hidden = !n;
  }

  function setRange(from, to, push) {
    fromInput.value = from || minDay;
    toInput.value = to || maxDay;
    rangeNote();
    if (push !== false && window.history && history.replaceState) {
      history.replaceState(null, "", "#from=" + fromInput.value + "&to=" + toInput.value);
    }
    drawAll();
  }

  function inRange(v) {
    var d = day(v), from = fromInput.value, to = toInput.value;
    return (!from || d >= from) && (!to || d <= to);
  }

  // --- drawing ---------------------------------------------------------------------------------------
  function drawChart(c) {
    var div = document.getElementById("plot-" + c.name), note = document.getElementById("nodata-" + c.name);
    var section = document.getElementById("chart-" + c.name), more = document.getElementById("more-" + c.name);
    if (more) { more.hidden = true; more.replaceChildren(); }  // a renderer that leaves facets out says so again
    var caveat = document.getElementById("caveat-" + c.name);
    if (caveat) { caveat.hidden = true; caveat.replaceChildren(); }  // and one of lower bounds
    if (c.status !== "ok") {
      note.hidden = false;
      section.dataset.points = "0";
      return;
    }
    var rows = records(c).filter(function (r) { return inRange(r[c.x]); }), n = 0;
    if (rows.length) {
      try {
        n = RENDER[c.kind](div, rows, c);
      } catch (err) {
        console.error("costline: chart " + c.name + " could not be drawn", err);
        n = 0;
      }
    }
    if (!n) {
      if (more) { more.hidden = true; more.replaceChildren(); }
      if (caveat) { caveat.hidden = true; caveat.replaceChildren(); }
      if (div.data) Plotly.purge(div);
      div.replaceChildren();
      note.textContent = rows.length ? "This chart could not be drawn (see the browser console)."
                                     : "No data in the selected date range.";
    }
    note.hidden = n > 0;
    section.dataset.points = String(n);
  }

  function drawAll() {
    DATA.charts.forEach(drawChart);
    document.body.dataset.drawn = String(Date.now());
  }

  fromInput.addEventListener("change", function () { setRange(fromInput.value, toInput.value); });
  toInput.addEventListener("change", function () { setRange(fromInput.value, toInput.value); });
  Array.prototype.forEach.call(document.querySelectorAll("button[data-range]"), function (b) {
    b.addEventListener("click", function () {
      var r = b.getAttribute("data-range");
      if (r === "all" || !maxDay) setRange(minDay, maxDay);
      else setRange(shiftDay(lastDay, 1 - parseInt(r, 10)) < minDay ? minDay : shiftDay(lastDay, 1 - parseInt(r, 10)),
                    lastDay);
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("button.copy"), function (b) {
    b.addEventListener("click", function (ev) {
      ev.preventDefault();
      var text = document.getElementById(b.getAttribute("data-copy")).textContent;
      var done = function () { b.textContent = "Copied"; setTimeout(function () { b.textContent = "Copy SQL"; }, 1500); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { b.textContent = "Select the text to copy"; });
      } else {
        var sel = window.getSelection(), range = document.createRange();
        range.selectNodeContents(document.getElementById(b.getAttribute("data-copy")));
        sel.removeAllRanges(); sel.addRange(range);
        try { document.execCommand("copy"); done(); } catch (e) { b.textContent = "Press Ctrl+C"; }
      }
    });
  });

  // #from=YYYY-MM-DD&to=YYYY-MM-DD; anything else (a malformed %-escape, a value that is no day) is
  // ignored: that end of the range stays open, and the rest of the page is drawn as usual.
  var hash = Object.create(null);
  location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
    var p = kv.split("="), v;
    if (p.length !== 2) return;
    try { v = decodeURIComponent(p[1]); } catch (e) { return; }
    if (isDay(v)) hash[p[0]] = v;
  });
  setRange(hash.from || (hash.to ? "" : defaultFrom), hash.to || (hash.from ? "" : defaultTo), false);

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(drawAll, 200);
  });

  if (DATA.refresh_s) {
    setTimeout(function () { location.reload(); }, DATA.refresh_s * 1000);
  }
})();
