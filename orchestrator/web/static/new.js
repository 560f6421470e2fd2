// A new LoRA: upload -> prep report -> captions (editable) -> the step plan -> start.
"use strict";

(() => {
  const { api, el, errorText } = LF;
  const $ = (id) => document.getElementById(id);
  let draft = null;
  let captionsDirty = false;

  async function ensureDraft() {
    if (!draft) draft = (await api("POST", "/api/drafts")).id;
    return draft;
  }

  // --- 1. photos -------------------------------------------------------------------------------------------
  async function upload(files) {
    await ensureDraft();
    $("upload-error").textContent = "";
    for (const file of files) {
      const item = el("li", {}, `${file.name} …`);
      $("uploaded").append(item);
      try {
        const kept = await api("PUT", `/api/drafts/${draft}/files/${encodeURIComponent(file.name)}`, undefined, file);
        item.textContent = kept.kind === "zip" ? `${file.name}: ${kept.files.length} files` : `${file.name} ✓`;
        item.className = "ok";
      } catch (error) {
        item.textContent = `${file.name}: ${errorText(error)}`;
        item.className = "error";
      }
    }
    $("prep").disabled = !$("uploaded").querySelector(".ok");
  }

  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); upload([...e.dataTransfer.files]); });
  $("files").addEventListener("change", (e) => upload([...e.target.files]));

  // --- 2. prep ---------------------------------------------------------------------------------------------
  function card(entry) {
    const src = entry.output ? `/drafts/${draft}/files/dataset/${encodeURIComponent(entry.output)}` : entry.thumbnail;
    return el("figure", { class: "card " + entry.verdict },
      src ? el("img", { src, alt: entry.source, loading: "lazy" }) : el("div", { class: "noimage" }, "no preview"),
      el("figcaption", {}, el("span", { class: "status " + entry.verdict }, entry.verdict), " ", entry.source,
        entry.reasons.length ? el("small", {}, entry.reasons.join("; ")) : null));
  }

  $("prep").addEventListener("click", async () => {
    const button = $("prep");
    button.disabled = true;
    button.textContent = "Preparing…";
    try {
      const report = await api("POST", `/api/drafts/${draft}/prep`, {
        subject: $("subject").value, size: Number($("size").value), crop: $("crop").value,
      });
      $("advice").textContent = report.advice.join(" ");
      $("report").replaceChildren(...report.entries.map(card));
      $("step-prep").hidden = false;
      if (report.accepted) {
        $("step-captions").hidden = false;
        $("step-plan").hidden = false;
        drawCaptions(await api("GET", `/api/drafts/${draft}/captions`));
      }
    } catch (error) {
      $("upload-error").textContent = errorText(error);
    } finally {
      button.disabled = false;
      button.textContent = "Prepare photos";
    }
  });

  // --- 3. captions -----------------------------------------------------------------------------------------
  function drawCaptions(captions) {
    const rows = captions.map((c) => el("tr", {},
      el("td", {}, el("img", { src: `/drafts/${draft}/files/dataset/${c.image.split("/").map(encodeURIComponent).join("/")}`, alt: c.image })),
      el("td", {}, el("div", { class: "muted" }, c.image),
        el("textarea", { rows: 2, "data-image": c.image, "data-saved": c.caption || "", oninput: () => { captionsDirty = true; } }, c.caption || ""))));
    $("captions").querySelector("tbody").replaceChildren(...rows);
    captionsDirty = false;
  }

  $("autocaption").addEventListener("click", async () => {
    $("autocaption").disabled = true;
    $("captions-saved").textContent = "writing captions…";
    try {
      drawCaptions(await api("POST", `/api/drafts/${draft}/captions/auto`, {
        captioner: $("captioner").value, trigger: $("trigger").value, template: $("template").value,
        overwrite: $("overwrite").checked,
      }));
      $("captions-saved").textContent = "captions written";
    } catch (error) {
      $("captions-saved").textContent = errorText(error);
    } finally {
      $("autocaption").disabled = false;
    }
  });

  async function saveCaptions() {
    const changes = {};
    for (const area of $("captions").querySelectorAll("textarea")) {
      if (area.value !== area.dataset.saved) changes[area.dataset.image] = area.value;
    }
    const { changed } = await api("PUT", `/api/drafts/${draft}/captions`, changes);
    for (const area of $("captions").querySelectorAll("textarea")) area.dataset.saved = area.value;
    captionsDirty = false;
    $("captions-saved").textContent = `saved (${changed.length} changed)`;
  }
  $("save-captions").addEventListener("click", () => saveCaptions().catch((e) => { $("captions-saved").textContent = errorText(e); }));

  // --- 4. plan and start -----------------------------------------------------------------------------------
  $("executor").addEventListener("change", () => {
    for (const label of document.querySelectorAll(".cluster")) label.hidden = !label.classList.contains($("executor").value);
  });

  function form() {
    const value = (id) => $(id).value.trim();
    const number = (id) => (value(id) === "" ? null : Number(value(id)));
    return {
      name: value("name"), subject: $("subject").value, trigger: value("trigger"), base_model: value("base_model"),
      family: $("family").value || null, backend: $("backend").value, preset: $("preset").value || null,
      steps: number("steps"), rank: number("rank"), learning_rate: number("learning_rate"), resolution: number("resolution"),
      set: $("set").value, executor: $("executor").value, partition: value("partition"), time: value("time"),
      address: value("address"), gpus: number("gpus"),
    };
  }

  async function plan() {
    $("plan-error").textContent = "";
    $("start").disabled = true;
    try {
      if (captionsDirty) await saveCaptions();
      const result = await api("POST", `/api/drafts/${draft}/plan`, form());
      $("plan-text").textContent = result.plan;
      $("plan-text").hidden = false;
      $("plan-notes").replaceChildren(...result.notes.map((n) => el("li", {}, n)));
      $("plan-job").querySelector("pre").textContent = result.job;
      $("plan-job").hidden = false;
      $("start").disabled = false;
    } catch (error) {
      $("plan-error").textContent = errorText(error);
    }
  }
  $("plan").addEventListener("click", plan);
  for (const id of ["steps", "rank", "learning_rate", "resolution", "set", "base_model", "backend", "preset", "family"]) {
    $(id).addEventListener("change", () => { $("start").disabled = true; });
  }

  $("start").addEventListener("click", async () => {
    $("start").disabled = true;
    try {
      if (captionsDirty) await saveCaptions();
      const job = await api("POST", `/api/drafts/${draft}/start`, form());
      location.href = "/jobs/" + job.id;
    } catch (error) {
      $("plan-error").textContent = errorText(error);
      $("start").disabled = false;
    }
  });
})();
