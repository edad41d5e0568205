// The MNAS dashboard page: draws the payload built by results/dashboard.py.
// Live (served by results/server.py) it polls api/data and redraws when a run has changed; as a static report the
// payload is inlined and drawn once. Figures come ready-made from Python; this script only places them, builds the
// table and the architecture diagram, and remembers the reader's choices (colour mode, sort, selected child) across
// redraws. Data goes into the page through textContent only, never as HTML.
"use strict";
(function () {
  const config = JSON.parse(document.getElementById("mnas-config").textContent);
  const plotConfig = { displaylogo: false, responsive: true };
  const OP_COLORS = { conv: "#8c564b", dsconv: "#17becf", mbconv3: "#1f77b4", mbconv6: "#9467bd" };
  const state = { payload: null, colorMode: 0, selected: null, sort: { key: "reward", desc: true },
                  listening: false };
  window.mnasDashboard = state; // for tests and the curious

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === "text") node.textContent = value;
      else if (key === "style") Object.assign(node.style, value);
      else node.setAttribute(key, value);
    }
    for (const child of children || []) node.appendChild(child);
    return node;
  }
  const num = (value, digits) => (value === null || value === undefined ? "-" : Number(value).toFixed(digits));
  const millions = (value, digits) => (value === null || value === undefined ? "-" : (value / 1e6).toFixed(digits));

  function setStatus(text, error) {
    const node = document.getElementById("status");
    node.textContent = text;
    node.classList.toggle("error", Boolean(error));
  }

  // -- header: one entry per run ------------------------------------------------------------------------------
  function renderRuns() {
    const box = document.getElementById("runs");
    box.replaceChildren();
    for (const run of state.payload.runs) {
      const c = run.counts;
      const reward = [run.reward_preset ? run.reward_preset + " reward" : null,
                      run.target_ms !== null ? "T = " + run.target_ms + " ms" : null,
                      run.strategy].filter(Boolean).join(", ");
      box.appendChild(el("div", { class: "run", "data-run": run.index, title: run.run_dir }, [
        el("span", { class: "swatch", style: { background: run.color } }),
        el("b", { text: run.label }),
        el("span", { class: "meta", text: reward ? "(" + reward + ")" : "" }),
        el("span", { class: "run-total", "data-run": run.index, text: String(c.total) }),
        el("span", { class: "meta", text: "children: " + c.ok + " ok, " + c.failed + " failed, " +
                                          c.pruned + " pruned" }),
        run.predicted_by.length ? el("span", { class: "predicted", text: "accuracies PREDICTED by " +
            run.predicted_by.join(", ") + ": no child was trained" }) : null,
      ].filter(Boolean)));
    }
  }

  // -- figures ------------------------------------------------------------------------------------------------
  function renderFigures() {
    const figures = state.payload.figures;
    const scatter = figures.scatter;
    scatter.layout.updatemenus[0].active = state.colorMode;
    Plotly.react("scatter", scatter.data, scatter.layout, plotConfig).then((div) => {
      const button = scatter.layout.updatemenus[0].buttons[state.colorMode];
      if (state.colorMode !== 0) Plotly.update(div, ...button.args);
      if (!state.listening) {
        div.on("plotly_buttonclicked", (event) => { state.colorMode = event.active; });
        div.on("plotly_click", onPointClick);
        state.listening = true;
      }
    });
    Plotly.react("progress", figures.progress.data, figures.progress.layout, plotConfig).then((div) => {
      if (!div.dataset.listening) { div.on("plotly_click", onPointClick); div.dataset.listening = "1"; }
    });
    Plotly.react("failures", figures.failures.data, figures.failures.layout, plotConfig);
  }

  function onPointClick(event) {
    const point = event.points && event.points[0];
    if (point && Array.isArray(point.customdata)) select(point.customdata[0], point.customdata[1]);
  }

  // -- failures -----------------------------------------------------------------------------------------------
  function renderFailures() {
    const box = document.getElementById("failure-summary");
    box.replaceChildren();
    for (const run of state.payload.runs) {
      const text = run.counts.failed === 0 ? "no failed children" :
        run.counts.failed + " failed: " + run.failures.map(([reason, n]) => n + " × " + reason).join(", ");
      box.appendChild(el("div", { class: "failure-run", "data-run": run.index }, [
        el("span", { class: "swatch", style: { background: run.color } }),
        el("span", { text: " " + run.label + ": " + text }),
      ]));
    }
  }

  // -- the table ----------------------------------------------------------------------------------------------
  const COLUMNS = [
    { key: "run", label: "run", text: true, value: (r) => r.run.label },
    { key: "rank", label: "rank", value: (r) => r.rank },
    { key: "pareto", label: "pareto", value: (r) => r.pareto },
    { key: "reward", label: "reward", value: (r) => r.reward, show: (r) => num(r.reward, 4) },
    { key: "accuracy", label: "accuracy", value: (r) => r.accuracy, show: (r) => num(r.accuracy, 4) },
    { key: "latency_ms", label: "latency (ms)", value: (r) => r.latency_ms, show: (r) => num(r.latency_ms, 2) },
    { key: "params", label: "params (M)", value: (r) => r.params, show: (r) => millions(r.params, 2) },
    { key: "madds", label: "mult-adds (M)", value: (r) => r.madds, show: (r) => millions(r.madds, 1) },
    { key: "latency_source", label: "latency source", text: true, value: (r) => r.latency_source },
    { key: "trial_id", label: "child", text: true, value: (r) => r.trial_id },
    { key: "command", label: "replay", text: true, value: (r) => r.command },
  ];

  function tableRows() {
    const rows = [];
    for (const run of state.payload.runs) for (const row of run.table) rows.push(Object.assign({ run }, row));
    const column = COLUMNS.find((c) => c.key === state.sort.key) || COLUMNS[3];
    const sign = state.sort.desc ? -1 : 1;
    return rows.sort((a, b) => {
      const x = column.value(a), y = column.value(b);
      if (x === null || x === undefined) return (y === null || y === undefined) ? 0 : 1; // missing values last
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * sign;
    });
  }

  function renderTable() {
    const table = document.getElementById("children-table");
    const columns = state.payload.runs.length > 1 ? COLUMNS : COLUMNS.slice(1);
    const head = el("tr", {}, columns.map((c) => {
      const th = el("th", { "data-key": c.key, text: c.label,
                            class: [c.text ? "text" : "", state.sort.key === c.key ? "sorted" : "",
                                    state.sort.key === c.key && !state.sort.desc ? "asc" : ""].join(" ").trim() });
      th.addEventListener("click", () => {
        // Numbers start best-first (latency, size: smallest), text alphabetically.
        const ascendingFirst = c.text || ["latency_ms", "params", "madds", "rank", "pareto"].includes(c.key);
        state.sort = state.sort.key === c.key ? { key: c.key, desc: !state.sort.desc }
                                               : { key: c.key, desc: !ascendingFirst };
        renderTable();
      });
      return th;
    }));
    table.tHead.replaceChildren(head);
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const row of tableRows()) {
      const isSelected = state.selected && state.selected.run === row.run.index &&
                         state.selected.trial === row.trial_id;
      const tr = el("tr", { "data-run": row.run.index, "data-trial": row.trial_id,
                            class: isSelected ? "selected" : null });
      for (const c of columns) {
        const td = el("td", { class: c.text ? "text" : null, "data-key": c.key });
        if (c.key === "command") td.appendChild(el("code", { class: "cmd", text: row.command }));
        else if (c.key === "trial_id") {
          td.appendChild(el("span", { text: row.trial_id }));
          for (const set of row.sets) td.appendChild(el("span", { class: "tag " + set, text: set }));
        } else if (c.key === "run") {
          td.appendChild(el("span", { class: "swatch", style: { background: row.run.color } }));
          td.appendChild(el("span", { text: " " + row.run.label }));
        } else {
          const value = c.show ? c.show(row) : c.value(row);
          td.textContent = value === null || value === undefined ? "-" : String(value);
        }
        tr.appendChild(td);
      }
      tr.addEventListener("click", () => select(row.run.index, row.trial_id));
      body.appendChild(tr);
    }
  }

  // -- the selected child -------------------------------------------------------------------------------------
  function select(runIndex, trialId) {
    state.selected = { run: runIndex, trial: trialId };
    renderDetail();
    for (const tr of document.querySelectorAll("#children-table tbody tr")) {
      tr.classList.toggle("selected", tr.dataset.run === String(runIndex) && tr.dataset.trial === trialId);
    }
  }

  function renderDetail() {
    const box = document.getElementById("detail");
    const run = state.payload.runs[state.selected.run];
    const child = run && run.children[state.selected.trial];
    box.replaceChildren();
    box.classList.toggle("empty", !child);
    if (!child) { box.textContent = "This child is not in the run."; return; }
    box.dataset.trial = child.trial_id;
    box.appendChild(el("div", { class: "detail-head" }, [
      el("span", { class: "swatch", style: { background: run.color } }),
      el("span", { class: "trial", text: child.trial_id }),
      el("span", { class: "tag", text: child.status }),
      el("span", { class: "meta", text: run.label }),
    ]));
    const facts = [
      ["accuracy", num(child.accuracy, 4)],
      ["latency", child.latency_ms === null ? "-" :
                  num(child.latency_ms, 2) + " ms (" + (child.latency_source || "?") + ")"],
      ["reward", num(child.reward, 4)],
      ["params", millions(child.params, 2) + "M"],
      ["multiply-adds", millions(child.madds, 1) + "M"],
      ["rank", [child.rank ? "rank " + child.rank + " by reward" : null,
                child.pareto ? "pareto " + child.pareto : null].filter(Boolean).join(", ") || "-"],
      ["sample", child.sample === null ? "-" : child.sample + (child.controller_step === null ? "" :
                                                               " (controller step " + child.controller_step + ")")],
    ];
    if (child.failure_code) facts.push(["failure", child.failure_detail ? `${child.failure_code}: ${child.failure_detail}` : child.failure_code]);
    box.appendChild(el("dl", { class: "metrics" }, facts.flatMap(([k, v]) => [
      el("dt", { text: k }), el("dd", { text: v, class: k === "failure" ? "failure" : null })])));
    if (child.command) box.appendChild(el("code", { class: "cmd", text: child.command }));
    box.appendChild(archDiagram(run, child.arch));
  }

  function archDiagram(run, blockStrings) {
    const blocks = blockStrings.map((s) => state.payload.blocks[s] || { string: s, error: "unknown block" });
    const widest = Math.max(1, ...blocks.map((b) => b.output_filters || 0));
    const diagram = el("div", { class: "arch", "data-blocks": String(blocks.length) });
    const first = blocks[0] && blocks[0].input_filters;
    const stem = run.stem || first;
    diagram.appendChild(el("div", { class: "arch-io" }, [
      el("span", { text: "stem" }), el("span", { text: "3×3" }), el("span", { text: "conv, stride 2" }),
      el("span", { class: "filters", text: stem ? "→ " + stem : "" })]));
    blocks.forEach((b, i) => {
      if (b.error) {
        diagram.appendChild(el("div", { class: "arch-block error", "data-index": i, text: b.string + ": " + b.error }));
        return;
      }
      const color = OP_COLORS[b.op] || "#7f7f7f";
      const width = Math.max(6, Math.round(60 * b.output_filters / widest));
      const layers = el("div", { class: "layers", title: b.repeats + " layer(s)" },
        Array.from({ length: b.repeats },
                   () => el("span", { class: "layer", style: { background: color, width: width + "px" } })));
      layers.appendChild(el("span", { class: "tags", text: "×" + b.repeats }));
      const tags = el("div", { class: "tags" }, [
        el("span", { class: "stride", text: "stride " + b.stride }),
        el("span", { class: "se", text: b.se_ratio > 0 ? "SE " + b.se_ratio : "no SE" }),
        el("span", { class: "skip", text: "skip: " + b.skip }),
        el("span", { class: "expand", text: b.op.startsWith("mbconv") ? "expand ×" + b.expand_ratio : "" }),
      ]);
      diagram.appendChild(el("div", { class: "arch-block", "data-index": i, "data-op": b.op, title: b.string,
                                      style: { borderLeftColor: color } }, [
        el("span", { class: "op", text: b.op, style: { color } }),
        el("span", { class: "kernel", text: b.kernel + "×" + b.kernel }),
        el("div", { class: "body" }, [layers, tags]),
        el("span", { class: "filters", text: b.input_filters + "→" + b.output_filters }),
      ]));
    });
    diagram.appendChild(el("div", { class: "arch-io" }, [
      el("span", { text: "head" }), el("span", { text: "1×1" }), el("span", { text: "conv, pool, classifier" }),
      el("span", { class: "filters", text: run.head ? "→ " + run.head : "" })]));
    diagram.appendChild(el("div", { class: "legend", text: "bar length ∝ output filters, one bar per layer; " +
                                                            "hover a block for its block string" }));
    return diagram;
  }

  // -- drawing and refreshing ---------------------------------------------------------------------------------
  function render(payload) {
    state.payload = payload;
    document.body.dataset.version = payload.version;
    renderRuns();
    renderFigures();
    renderTable();
    renderFailures();
    if (state.selected) renderDetail();
  }

  async function poll() {
    try {
      const since = state.payload ? "?since=" + encodeURIComponent(state.payload.version) : "";
      const response = await fetch("api/data" + since, { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const body = await response.json();
      if (!body.unchanged) render(body);
      setStatus("live · checked " + new Date().toLocaleTimeString() + " · every " + config.refresh_seconds + " s");
    } catch (err) {
      setStatus("cannot reach the dashboard server (" + err.message + ") — retrying", true);
    }
    setTimeout(poll, config.refresh_seconds * 1000);
  }

  if (config.live) {
    poll();
  } else {
    render(config.payload);
    setStatus("report of " + config.payload.generated_at.replace("T", " ").replace("+00:00", " UTC"));
  }
})();
