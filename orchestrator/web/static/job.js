// A queued job: wait for its run folder, then go to the run's page.
"use strict";

(() => {
  const { api, pageData, errorText } = LF;
  const { id } = pageData();
  const status = document.getElementById("job-status"), message = document.getElementById("job-message");
  const cancel = document.getElementById("cancel");

  async function poll() {
    try {
      const job = await api("GET", "/api/jobs/" + id);
      if (job.run_name) {
        location.replace("/runs/" + encodeURIComponent(job.run_name));
        return;
      }
      status.textContent = `${job.name} · ${job.backend} · ${job.executor} · ${job.status}`;
      message.textContent = job.message || "";
      cancel.hidden = !["queued", "running"].includes(job.status);
    } catch (error) {
      message.textContent = errorText(error);
    }
    setTimeout(poll, 1000);
  }
  cancel.addEventListener("click", async () => {
    try {
      await api("POST", `/api/jobs/${id}/cancel`);
    } catch (error) {
      message.textContent = errorText(error);
    }
  });
  poll();
})();
