// Compare 2-4 runs: what `loraforge compare`'s report shows (its own readers, on the server), the curves live.
"use strict";

(() => {
  const { api, el, fmt, pageData, follow } = LF;
  const $ = (id) => document.getElementById(id);
  const { runs } = pageData();
  if (runs.length < 2) return;
  $("pick-note").hidden = true;
  const chart = new LossChart($("chart"));
  chartControls(chart);
  const curves = new Map(runs.map((r) => [r, new Map()]));
  let report = null;

  const COLUMNS = [
    ["Run", (a) => el("a", { href: "/runs/" + encodeURIComponent(a.run) }, a.label)],
    ["Backend", (a) => a.backend],
    ["Status", (a) => el("span", { class: "status " + a.status }, a.status)],
    ["Steps", (a) => (a.step === null ? "–" : `${a.step}/${a.total ?? "?"}`)],
    ["Final loss", (a) => fmt.loss(a.final_loss)],
    ["Wall", (a) => (a.wall_s ? fmt.eta(a.wall_s) : "–")],
    ["Steps/s", (a) => fmt.speed(a.steps_per_s)],
    ["Peak RAM", (a) => fmt.bytes(a.peak_ram_bytes)],
    ["LoRA size", (a) => (a.lora && a.lora.size_bytes ? fmt.bytes(a.lora.size_bytes) : "–")],
    ["Rank", (a) => (a.lora && a.lora.rank) || "–"],
    ["Note", (a) => a.reason || ""],
  ];

  function draw() {
    if (!report) return;
    $("summary").querySelector("thead").replaceChildren(el("tr", {}, COLUMNS.map(([h]) => el("th", {}, h))));
    $("summary").querySelector("tbody").replaceChildren(...report.arms.map((arm) =>
      el("tr", {}, COLUMNS.map(([, cell]) => el("td", {}, cell(arm))))));
    chart.set(report.arms.map((arm) => ({ name: arm.label, points: [...curves.get(arm.run).entries()].sort((a, b) => a[0] - b[0]) })));
    $("loss-note").textContent = report.loss_note;
    const differ = Object.entries(report.differing_settings);
    const rows = differ.map(([key, values]) => el("tr", {}, el("td", {}, key), report.arms.map((a) => el("td", {}, JSON.stringify(values[a.label])))));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: report.arms.length + 1, class: "muted" }, "none: the runs share every setting")));
    $("differ").querySelector("tbody").replaceChildren(
      el("tr", {}, el("th", {}, "setting"), report.arms.map((a) => el("th", {}, a.label))), ...rows);
    const prompts = [...new Set(report.arms.flatMap((a) => a.samples.map((s) => s.prompt)))];
    $("samples").replaceChildren(prompts.length ? el("table", { class: "grid samples" },
      el("tr", {}, el("th", {}, "prompt"), report.arms.map((a) => el("th", {}, a.label))),
      prompts.map((p) => el("tr", {}, el("td", {}, p), report.arms.map((a) => {
        const s = a.samples.find((x) => x.prompt === p);
        const url = s && `/runs/${encodeURIComponent(a.run)}/files/${s.path.split("/").map(encodeURIComponent).join("/")}`;
        return el("td", {}, url ? el("img", { src: url, alt: p }) : "–");
      })))) : el("p", { class: "muted" }, "No sample images (loraforge compare writes them for the runs it trains)."));
  }

  async function load() {
    try {
      report = await api("GET", "/api/compare?" + runs.map((r) => "run=" + encodeURIComponent(r)).join("&"));
      for (const arm of report.arms) for (const [step, loss] of arm.loss_curve) curves.get(arm.run).set(step, loss);
      draw();
    } catch (_) { /* try again */ }
  }

  let pending = null;
  follow(runs, (run, _n, e) => {
    if (e.event === "progress" && e.loss !== null && e.loss !== undefined) curves.get(run).set(e.step, e.loss);
    if (["finished", "failure", "checkpoint"].includes(e.event)) load();
    if (!pending) pending = requestAnimationFrame(() => { pending = null; draw(); });
  });
  load();
  setInterval(load, 5000);
})();
