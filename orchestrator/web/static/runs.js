// The runs list: filter, sort, refresh every two seconds, pick 2-4 runs to compare; the jobs still waiting.
"use strict";

(() => {
  const { api, el, fmt, pageData } = LF;
  const table = document.getElementById("runs");
  const body = table.querySelector("tbody");
  const filter = document.getElementById("filter");
  const statusFilter = document.getElementById("status-filter");
  const compare = document.getElementById("compare");
  let data = pageData();
  let sortKey = "updated", descending = true;
  const picked = new Set();

  function cells(row) {
    const step = row.step === null ? "" : `${row.step}/${row.total ?? "?"}`;
    return [
      el("td", {}, el("input", { type: "checkbox", class: "pick", value: row.name, checked: picked.has(row.name), "aria-label": "compare " + row.name })),
      el("td", {}, el("a", { href: "/runs/" + encodeURIComponent(row.name) }, row.name)),
      el("td", {}, row.backend),
      el("td", {}, row.family || ""),
      el("td", {}, el("span", { class: "status " + row.status }, row.status)),
      el("td", { class: "num" }, step),
      el("td", { class: "num" }, row.loss === null ? "" : fmt.loss(row.loss)),
      el("td", { class: "num" }, row.it_per_s ? fmt.speed(row.it_per_s) : ""),
      el("td", { class: "num" }, row.eta_s === null ? "" : fmt.eta(row.eta_s)),
      el("td", { class: "num" }, row.updated ? new Date(row.updated * 1000).toLocaleString() : ""),
    ];
  }

  function shown() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const status = statusFilter.value;
    const rows = data.runs.filter((row) => {
      const text = [row.name, row.backend, row.family, row.status, row.base_model].join(" ").toLowerCase();
      return (!status || row.status === status) && words.every((w) => text.includes(w));
    });
    rows.sort((a, b) => {
      const x = a[sortKey], y = b[sortKey];
      const order = x === y ? 0 : x === null || x === undefined ? 1 : y === null || y === undefined ? -1 : x < y ? -1 : 1;
      return descending ? -order : order;
    });
    return rows;
  }

  function draw() {
    const rows = shown();
    body.replaceChildren(...rows.map((row) => el("tr", { "data-name": row.name }, cells(row))));
    document.getElementById("count").textContent = `${rows.length} of ${data.runs.length} runs`;
    for (const th of table.querySelectorAll("th[data-key]")) {
      th.classList.toggle("sorted", th.dataset.key === sortKey);
      th.classList.toggle("desc", th.dataset.key === sortKey && descending);
    }
    const waiting = document.getElementById("waiting");
    waiting.replaceChildren();
    if (data.waiting.length) {
      waiting.append(el("h2", {}, "Queue"), el("ul", { class: "queue" }, data.waiting.map((job) =>
        el("li", {}, el("a", { href: "/jobs/" + job.id }, job.name), ` · ${job.backend} · ${job.executor} · `,
          el("span", { class: "status " + job.status }, job.status), job.message ? " · " + job.message : ""))));
    }
    compare.disabled = picked.size < 2 || picked.size > 4;
  }

  body.addEventListener("change", (event) => {
    if (!event.target.classList.contains("pick")) return;
    event.target.checked ? picked.add(event.target.value) : picked.delete(event.target.value);
    compare.disabled = picked.size < 2 || picked.size > 4;
  });
  for (const th of table.querySelectorAll("th[data-key]")) {
    const sort = () => {
      descending = sortKey === th.dataset.key ? !descending : false;
      sortKey = th.dataset.key;
      draw();
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", (e) => e.key === "Enter" && sort());
  }
  filter.addEventListener("input", draw);
  statusFilter.addEventListener("change", draw);
  compare.addEventListener("click", () => {
    location.href = "/compare?" + [...picked].map((n) => "run=" + encodeURIComponent(n)).join("&");
  });

  async function refresh() {
    try {
      data = await api("GET", "/api/runs");
      draw();
    } catch (_) { /* the server may be restarting: try again on the next tick */ }
  }
  draw();
  setInterval(refresh, 2000);
})();
