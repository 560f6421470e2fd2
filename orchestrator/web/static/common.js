// Shared by every page: calls to the API (with the CSRF header), building elements, formatting, live events.
"use strict";

const LF = (() => {
  const csrf = document.querySelector('meta[name="csrf"]').content;

  // fetch a JSON API; throws an Error carrying the server's message and hint on failure
  async function api(method, url, body, rawBody) {
    const options = { method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf } };
    if (rawBody !== undefined) {
      options.body = rawBody;
    } else if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = { error: text };
    }
    if (!response.ok) {
      const error = new Error((data && data.error) || response.statusText);
      error.hint = data && data.hint;
      error.status = response.status;
      throw error;
    }
    return data;
  }

  // el("a", {href: "/x", class: "y"}, "text", otherNode): text is always text, never HTML
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function pageData() {
    return JSON.parse(document.getElementById("page-data").textContent);
  }

  function errorText(error) {
    return error.message + (error.hint ? " — " + error.hint : "");
  }

  const fmt = {
    loss: (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(4)),
    speed: (x) => (x ? Number(x).toFixed(2) : "–"),
    eta: (s) => {
      if (s === null || s === undefined) return "–";
      s = Math.round(s);
      const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
      return h ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(r).padStart(2, "0")}s`;
    },
    bytes: (b) => (b === null || b === undefined ? "–" : b >= 1 << 20 ? (b / (1 << 20)).toFixed(1) + " MiB" : (b / 1024).toFixed(1) + " KiB"),
    time: (t) => (t ? new Date(t * 1000).toLocaleString() : ""),
  };

  // Follow the events of one or more runs; onEvent(run, index, event) gets each event once, in order, even
  // across reconnects (the server resumes from the stream's last id).
  function follow(runs, onEvent) {
    const query = runs.map((r) => "run=" + encodeURIComponent(r)).join("&");
    const source = new EventSource("/api/events?" + query);
    const seen = {};
    source.onmessage = (message) => {
      const data = JSON.parse(message.data);
      if ((seen[data.run] ?? -1) >= data.n) return;
      seen[data.run] = data.n;
      onEvent(data.run, data.n, data.e);
    };
    return source;
  }

  // a path the trainer wrote, as a URL the server serves (only inside the run folder)
  function runFile(run, root, path, download) {
    if (!path) return null;
    let rel = path;
    if (path.startsWith("/")) {
      if (!path.startsWith(root + "/")) return null;
      rel = path.slice(root.length + 1);
    }
    const url = `/runs/${encodeURIComponent(run)}/files/${rel.split("/").map(encodeURIComponent).join("/")}`;
    return download ? url + "?download=1" : url;
  }

  return { api, el, pageData, errorText, fmt, follow, runFile };
})();
