// Pull a model with its progress streamed into the page; without JavaScript the form posts and the page reloads.
(function () {
  "use strict";
  const form = document.getElementById("pull-form");
  if (!form || !window.fetch || !window.ReadableStream) return;
  const pulls = document.getElementById("pulls");

  function row(source) {
    const found = Array.from(pulls.querySelectorAll(".pull")).find((item) => item.dataset.source === source);
    if (found) return found;
    const item = document.createElement("div");
    item.className = "pull";
    item.dataset.source = source;
    item.dataset.events = "0";
    const name = document.createElement("span");
    name.className = "pull-source";
    name.textContent = source;
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = 0;
    const status = document.createElement("span");
    status.className = "pull-status";
    item.append(name, bar, status);
    pulls.prepend(item);
    return item;
  }

  function show(item, state) {
    item.dataset.source = state.source;
    item.querySelector(".pull-source").textContent = state.source;
    item.dataset.events = String(Number(item.dataset.events || 0) + 1);
    item.dataset.status = state.status;
    const bar = item.querySelector("progress");
    if (state.total) {
      bar.max = state.total;
      bar.value = state.completed;
    }
    const part = state.parts > 1 ? " (part " + state.part + " of " + state.parts + ")" : "";
    const size = state.total ? ": " + (state.completed / 1e6).toFixed(1) + " of " + (state.total / 1e6).toFixed(1) + " MB" : "";
    item.querySelector(".pull-status").textContent = state.status + (state.file ? " " + state.file + part + size : "");
    if (state.error) fail(item, state.error);
  }

  function fail(item, message) {
    let shown = item.querySelector(".error");
    if (!shown) {
      shown = document.createElement("span");
      shown.className = "error";
      shown.setAttribute("role", "alert");
      item.append(shown);
    }
    shown.textContent = message; // textContent: a message may quote what was typed
  }

  // Read a Server-Sent Events stream, calling onEvent with each data line's JSON.
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const block = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const data = block.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5)).join("\n");
        if (data) onEvent(JSON.parse(data));
      }
    }
  }

  // Take the table of pulled models from the server's page, which now lists the model pulled.
  async function refreshTable() {
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById("library") || page.getElementById("library-empty");
    const current = document.getElementById("library") || document.getElementById("library-empty");
    if (fresh && current) current.replaceWith(document.adoptNode(fresh));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const source = form.elements.source.value.trim();
    const item = row(source);
    let last = null;
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "text/event-stream" },
        credentials: "same-origin",
      });
      if (!response.ok) {
        const data = await response.json().catch(() => null);
        throw new Error(data && data.error ? data.error.message : "The server answered " + response.status + ".");
      }
      await readEvents(response, (state) => { last = state; show(item, state); });
      if (!last || !["done", "failed"].includes(last.status)) throw new Error("The pull's progress was cut off; reload to see it.");
      if (last.status === "done") await refreshTable();
    } catch (error) {
      item.dataset.status = "failed";
      fail(item, error.message);
    }
  });
})();
