// Stream replies into the page without reloading; without JavaScript every form posts as usual.
(function () {
  "use strict";
  const composer = document.getElementById("chat-form");
  if (!composer || !window.fetch || !window.ReadableStream) return;
  const textbox = document.getElementById("textbox");
  const sendButton = document.getElementById("send");
  const stopButton = document.getElementById("stop");
  const conversation = document.getElementById("conversation");
  const errorBox = document.getElementById("error");
  const settings = document.getElementById("settings");
  let controller = null;
  let following = true; // keep the newest text in view until the user scrolls up

  function atBottom() {
    return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 48;
  }

  function follow() {
    if (following) window.scrollTo(0, document.documentElement.scrollHeight);
  }

  window.addEventListener("scroll", () => { following = atBottom(); }, { passive: true });

  function fromHtml(html) {
    const template = document.createElement("template");
    template.innerHTML = html; // rendered by the server, where Markdown is escaped and links are checked
    return Array.from(template.content.children);
  }

  function addMessage(role, text) {
    const empty = document.getElementById("empty");
    if (empty) empty.remove();
    const article = document.createElement("article");
    article.className = "message " + role;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Palaver";
    const body = document.createElement("p");
    body.className = "text";
    body.textContent = text; // textContent, never innerHTML: text still streaming is shown as text
    article.append(who, body);
    conversation.appendChild(article);
    follow();
    return article;
  }

  // A thinking model's reasoning streams into a collapsed box above its answer, as the server renders it.
  function addReasoning(reply) {
    const details = document.createElement("details");
    details.className = "reasoning";
    const summary = document.createElement("summary");
    summary.textContent = "Thinking";
    const body = document.createElement("p");
    body.className = "reasoning-text";
    details.append(summary, body);
    reply.querySelector(".text").before(details);
    return body;
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function setBusy(busy) {
    document.body.classList.toggle("busy", busy);
    sendButton.hidden = busy;
    stopButton.hidden = !busy;
  }

  // Add what only works with a script: copy buttons on replies and on code blocks.
  function enhance(root) {
    root.querySelectorAll(".copy-reply[hidden]").forEach((button) => { button.hidden = false; });
    root.querySelectorAll("figure.code").forEach((figure) => {
      if (figure.querySelector(".copy-code")) return;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy-code";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy the " + figure.querySelector("figcaption").textContent + " code");
      figure.querySelector("figcaption").appendChild(button);
    });
  }

  async function copy(text, button) {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch (error) {
      button.textContent = "Copy failed";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  }

  conversation.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    if (button.classList.contains("copy-reply")) copy(button.closest("article").dataset.source, button);
    if (button.classList.contains("copy-code")) copy(button.closest("figure").querySelector("code").textContent, button);
  });

  // Read Server-Sent Events from a fetch response, calling onEvent with each parsed data payload.
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const data = buffer.slice(0, end).split("\n")
          .filter((line) => line.startsWith("data: ")).map((line) => line.slice(6)).join("\n");
        buffer = buffer.slice(end + 2);
        if (data) onEvent(JSON.parse(data));
      }
    }
  }

  // The settings panel's values go with every message, whichever form sends it.
  function requestBody(form) {
    const body = new URLSearchParams(new FormData(form));
    if (form !== composer && settings) {
      settings.querySelectorAll("input, select").forEach((field) => {
        if (!body.has(field.name)) body.set(field.name, field.value);
      });
    }
    return body;
  }

  async function send(form, body, question, reply) {
    const text = reply.querySelector(".text");
    let received = 0;
    let thought = null;
    let finished = null;
    const response = await fetch(form.action, {
      method: "POST",
      body: body,
      headers: { Accept: "text/event-stream" },
      credentials: "same-origin",
      signal: controller.signal,
    });
    if (!response.ok) {
      const data = await response.json().catch(() => null);
      throw new Error(data && data.error ? data.error.message : "The server answered " + response.status + ".");
    }
    await readEvents(response, (event) => {
      if (event.error) throw new Error(event.error.message);
      if (event.reasoning !== undefined) {
        if (!thought) {
          reply.classList.remove("thinking");
          text.textContent = "";
          thought = addReasoning(reply);
        }
        thought.textContent += event.reasoning; // textContent, never innerHTML, as the reply's text
        follow();
      }
      if (event.delta !== undefined) {
        if (received === 0) {
          reply.classList.remove("thinking");
          text.textContent = "";
        }
        received += 1;
        reply.dataset.deltas = String(received);
        text.textContent += event.delta;
        follow();
      }
      if (event.done) finished = event;
    });
    if (!finished) throw new Error("The reply was cut off. Try again.");
    if (finished.finish_reason === "cancelled" && !finished.reply && !finished.reasoning) {
      throw new DOMException("Stopped before any text", "AbortError");
    }
    // The server renders the finished turn, so a streamed reply looks as it will after a reload.
    conversation.querySelectorAll(".turn-actions").forEach((actions) => actions.remove());
    const rendered = fromHtml(finished.html);
    question.replaceWith(rendered[0]);
    reply.replaceWith(rendered[1]);
    enhance(rendered[1]);
    adopt(finished.conversation_id);
    follow();
  }

  // A new conversation gets its own address once its first reply is stored, and its place in the list.
  function adopt(conversationId) {
    const path = "/c/" + conversationId;
    if (window.location.pathname !== path) {
      saveSettings(conversationId);
      history.replaceState(null, "", path);
      composer.action = path;
      composer.dataset.conversation = conversationId;
      stopButton.dataset.url = path + "/stop";
      refreshChrome(path);
    }
  }

  // Take the conversation list and the header (title, rename, export, delete) from the server's page.
  async function refreshChrome(path) {
    try {
      const response = await fetch(path, { credentials: "same-origin" });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      ["#sidebar", ".chat-header"].forEach((selector) => {
        const replacement = fresh.querySelector(selector);
        const current = document.querySelector(selector);
        if (replacement && current) current.replaceWith(document.importNode(replacement, true));
      });
    } catch (error) {
      // The page still works; the next load shows the list.
    }
  }

  function settingsKey(conversationId) {
    return "palaver:settings:" + (conversationId || "new");
  }

  function saveSettings(conversationId) {
    if (!settings) return;
    const values = {};
    settings.querySelectorAll("input, select").forEach((field) => { values[field.name] = field.value; });
    try { localStorage.setItem(settingsKey(conversationId), JSON.stringify(values)); } catch (error) { /* private mode */ }
  }

  function restoreSettings() {
    if (!settings) return;
    let values = null;
    try { values = JSON.parse(localStorage.getItem(settingsKey(composer.dataset.conversation)) || "null"); } catch (error) { values = null; }
    if (!values) return;
    settings.querySelectorAll("input").forEach((field) => {
      if (typeof values[field.name] === "string") field.value = values[field.name];
    });
  }

  async function submitTurn(form) {
    if (controller) return;
    const field = form.querySelector("[name=textbox]");
    const value = field.value;
    if (!value.trim()) {
      showError("Type a message first.");
      return;
    }
    showError("");
    const body = requestBody(form); // read before the box is cleared
    const replacing = form.querySelector("[name=replace_last_turn]") !== null;
    const replaced = replacing ? Array.from(conversation.querySelectorAll("article.message")).slice(-2) : [];
    replaced.forEach((article) => article.remove());
    const question = addMessage("user", value.trim());
    const reply = addMessage("assistant", "Thinking");
    reply.classList.add("thinking");
    reply.setAttribute("aria-busy", "true");
    if (form === composer) textbox.value = "";
    growComposer();
    controller = new AbortController();
    following = true;
    setBusy(true);
    try {
      await send(form, body, question, reply);
      saveSettings(composer.dataset.conversation || null);
    } catch (error) {
      const answered = reply.querySelector(".text").textContent !== "" && !reply.classList.contains("thinking");
      const shown = answered || reply.querySelector(".reasoning-text") !== null;
      if (error.name === "AbortError" && shown) {
        // Stopped: the server keeps the part already shown, and so does the page.
        reply.classList.add("stopped");
        reply.removeAttribute("aria-busy");
      } else {
        // Nothing was kept on the server, so nothing stays here: the old turn comes back, the text goes back.
        reply.remove();
        question.remove();
        replaced.forEach((article) => conversation.appendChild(article));
        if (form === composer) textbox.value = value;
        if (error.name !== "AbortError") showError(error.message || "Could not reach the server.");
      }
    } finally {
      controller = null;
      stopButton.disabled = false;
      setBusy(false);
      textbox.focus();
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!form.classList.contains("turn-form")) return;
    event.preventDefault();
    submitTurn(form);
  });

  // Stop asks the server to end the generation; the stream then finishes with what was kept.
  // If the server cannot be told, hanging up stops it too.
  stopButton.addEventListener("click", async () => {
    const running = controller;
    if (!running) return;
    stopButton.disabled = true;
    try {
      const response = await fetch(stopButton.dataset.url, { method: "POST", credentials: "same-origin" });
      if (!response.ok) running.abort();
    } catch (error) {
      running.abort();
    }
    setTimeout(() => { if (controller === running) running.abort(); }, 5000);
  });

  // Chromium grows the box by CSS (field-sizing); other browsers by its scroll height.
  function growComposer() {
    if (window.CSS && CSS.supports("field-sizing", "content")) return;
    textbox.style.height = "auto";
    textbox.style.height = Math.min(textbox.scrollHeight + 2, window.innerHeight * 0.4) + "px";
  }

  textbox.addEventListener("input", growComposer);
  textbox.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!controller) composer.requestSubmit();
    }
  });

  restoreSettings();
  enhance(conversation);
})();
