// One run, live: every event of its events.jsonl arrives once over server-sent events and updates the page in place.
"use strict";

(() => {
  const { api, el, fmt, pageData, errorText, follow, runFile } = LF;
  const $ = (id) => document.getElementById(id);
  const PHASES = ["setup", "loading", "caching", "training", "saving", "done"];
  const { name } = pageData();
  const run = { phases: [], progress: null, points: [], validation: [], overfit: null, samples: new Map(),
    logs: [], failure: null, finished: null };
  let detail = null;
  const chart = new LossChart($("chart"));
  chartControls(chart);

  function onEvent(_run, _n, e) {
    switch (e.event) {
      case "phase": run.phases.push(e.name); break;
      case "progress":
        run.progress = e;
        if (e.loss !== null && e.loss !== undefined) {
          const last = run.points[run.points.length - 1];
          if (last && last[0] === e.step) last[1] = e.loss; else run.points.push([e.step, e.loss]);
        }
        break;
      case "validation": run.validation.push([e.step, e.loss]); break;
      case "overfit": run.overfit = e; break;
      case "sample": {
        const prompt = e.prompt || "(prompt not reported)";
        if (!run.samples.has(prompt)) run.samples.set(prompt, new Map());
        run.samples.get(prompt).set(e.step ?? 0, e.path);
        break;
      }
      case "log": run.logs.push(e); if (run.logs.length > 1000) run.logs.shift(); break;
      case "failure": run.failure = e; break;
      case "finished": run.finished = e; break;
    }
    if (["checkpoint", "finished", "failure", "phase"].includes(e.event)) loadDetail();
    if (["finished", "failure"].includes(e.event)) loadLog();
    schedule();
  }

  let drawing = false;
  function schedule() {
    if (drawing) return;
    drawing = true;
    requestAnimationFrame(() => { drawing = false; draw(); });
  }

  function draw() {
    const p = run.progress;
    $("step").textContent = p ? `${p.step}/${p.total ?? "?"}` : "–";
    $("loss").textContent = p ? fmt.loss(p.loss) : "–";
    $("speed").textContent = p ? fmt.speed(p.it_per_s) : "–";
    $("eta").textContent = p ? fmt.eta(p.eta_s) : "–";
    $("epoch").textContent = p && p.epoch ? `${p.epoch}/${p.epochs ?? "?"}` : "–";
    const current = run.phases[run.phases.length - 1];
    $("phases").replaceChildren(...PHASES.map((phase) => el("li", {
      class: run.phases.includes(phase) ? (phase === current && !run.finished ? (run.failure ? "failed" : "current") : "done") : "",
    }, phase)));
    const markers = run.overfit ? [{ step: run.overfit.step, label: `overfitting from step ${run.overfit.step}` }] : [];
    chart.set([{ name, points: run.points, validation: run.validation }], markers);
    $("overfit").hidden = !run.overfit;
    if (run.overfit) {
      $("overfit").textContent = `Validation loss rose at step ${run.overfit.step} while training loss fell: ` +
        `the checkpoint at step ${run.overfit.before} may generalise better.`;
    }
    drawFailure();
    drawSamples();
    if ($("log-stream").value === "events") {
      $("log").textContent = run.logs.slice(-300).map((l) => `[${l.level}] ${l.text}`).join("\n");
    }
  }

  function drawFailure() {
    const box = $("failure");
    box.hidden = !run.failure;
    if (!run.failure) return;
    const f = run.failure;
    box.replaceChildren(el("div", {}, el("b", {}, `${f.kind}: ${f.message}`), f.hint ? el("p", {}, "Fix: " + f.hint) : null,
      f.log_tail && f.log_tail.length ? el("pre", {}, f.log_tail.join("\n")) : null,
      f.log_path ? el("p", { class: "muted" }, "Full log: " + f.log_path) : null));
  }

  function drawSamples() {
    if (!run.samples.size || !detail) return;
    const steps = [...new Set([...run.samples.values()].flatMap((m) => [...m.keys()]))].sort((a, b) => a - b);
    const head = el("tr", {}, el("th", {}, "prompt"), steps.map((s) => el("th", {}, `step ${s}`)));
    const rows = [...run.samples.entries()].map(([prompt, byStep]) => el("tr", {}, el("td", {}, prompt),
      steps.map((s) => {
        const url = runFile(name, detail.root, byStep.get(s));
        return el("td", {}, url ? el("a", { href: url }, el("img", { src: url, alt: `${prompt} at step ${s}`, loading: "lazy" })) : "");
      })));
    $("samples").replaceChildren(el("table", { class: "grid samples" }, el("thead", {}, head), el("tbody", {}, rows)));
  }

  // --- what events do not carry: status, queue, checkpoints table, files ----------------------------------
  let loading = null;
  function loadDetail() {
    if (loading) return loading;
    loading = api("GET", "/api/runs/" + encodeURIComponent(name)).then(showDetail).catch(() => {})
      .finally(() => { loading = null; });
    return loading;
  }

  function showDetail(d) {
    const first = detail === null;
    detail = d;
    const status = (d.summary && d.summary.status) || d.state.status || "?";
    const queue = d.queue;
    const shown = queue && ["failed", "cancelled"].includes(queue.status) && ["running", "created"].includes(status) ? queue.status : status;
    $("status").textContent = shown;
    $("status").className = "status " + shown;
    $("queue-note").textContent = queue && queue.message ? `queue: ${queue.status} · ${queue.message}` : "";
    drawActions(shown, queue);
    $("checkpoints").querySelector("tbody").replaceChildren(...d.checkpoints.map((c) => el("tr", {},
      el("td", { class: "num" }, c.step), el("td", { class: "num" }, fmt.loss(c.train_loss)),
      el("td", { class: "num" + (d.overfit_step === c.step ? " warn" : "") }, fmt.loss(c.val_loss)),
      el("td", {}, c.file ? el("a", { href: runFile(name, d.root, c.path, true) }, c.path) : c.path))));
    $("loras").replaceChildren(...d.loras.map((path) => el("a", { class: "button primary download", href: runFile(name, d.root, path, true) }, "Download " + path.split("/").pop())));
    if (first) $("job-yaml").textContent = d.job_yaml;
    $("rendered").replaceChildren(...d.rendered.concat(d.logs).map((f) => el("button", { class: "link", onclick: () => showFile(f.path) }, `${f.path} (${fmt.bytes(f.size)})`)));
    schedule();
  }

  async function showFile(path) {
    const response = await fetch(runFile(name, detail.root, path), { credentials: "same-origin" });
    const text = await response.text();
    $("rendered-text").textContent = text.length > 200000 ? text.slice(-200000) : text;
    $("rendered-text").hidden = false;
  }

  function drawActions(status, queue) {
    const ended = ["finished", "failed", "interrupted", "cancelled"].includes(status);
    // a queued job can be cancelled; a running one until its run has ended (the queue notices within a second)
    const active = queue && (queue.status === "queued" || (queue.status === "running" && !ended));
    const act = (label, path, go) => el("button", { onclick: async (event) => {
      event.target.disabled = true;
      try {
        const job = await api("POST", `/api/${path}`);
        if (go) location.href = "/jobs/" + job.id; else loadDetail();
      } catch (error) { $("queue-note").textContent = errorText(error); event.target.disabled = false; }
    } }, label);
    const buttons = [];
    if (active) buttons.push(act("Cancel", `jobs/${queue.id}/cancel`, false));
    if (!active && ["failed", "interrupted", "cancelled"].includes(status)) buttons.push(act("Resume", `runs/${encodeURIComponent(name)}/resume`, true));
    if (!active && status !== "running") buttons.push(act("Retry", `runs/${encodeURIComponent(name)}/retry`, true));
    $("actions").replaceChildren(...buttons);
  }

  // --- the raw log's tail ----------------------------------------------------------------------------------
  async function loadLog() {
    const stream = $("log-stream").value;
    if (stream !== "events") {
      try {
        const { lines } = await api("GET", `/api/runs/${encodeURIComponent(name)}/log?stream=${stream}&lines=200`);
        const log = $("log");
        const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
        log.textContent = lines.join("\n");
        if (atBottom) log.scrollTop = log.scrollHeight;  // follow the end, unless the reader scrolled up
      } catch (_) { /* try again on the next tick */ }
    }
    schedule();
  }
  $("log-stream").addEventListener("change", loadLog);

  loadDetail().then(() => follow([name], onEvent));
  loadLog();
  setInterval(() => { loadDetail(); if (!run.finished && !run.failure) loadLog(); }, 3000);
})();
