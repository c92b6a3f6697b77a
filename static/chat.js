// Stream replies into the page without reloading; without JavaScript the form posts as usual.
(function () {
  "use strict";
  const form = document.getElementById("chat-form");
  if (!form || !window.fetch || !window.ReadableStream) return;
  const textbox = document.getElementById("textbox");
  const sendButton = document.getElementById("send");
  const stopButton = document.getElementById("stop");
  const conversation = document.getElementById("conversation");
  const errorBox = document.getElementById("error");
  const stopUrl = form.dataset.stopUrl;
  let controller = null;

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
    body.textContent = text;  // textContent, never innerHTML: replies are shown as text
    article.append(who, body);
    conversation.appendChild(article);
    article.scrollIntoView({ block: "end" });
    return article;
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function body(message) {
    return message.querySelector(".text");
  }

  function setBusy(busy) {
    sendButton.hidden = busy;
    stopButton.hidden = !busy;
  }

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

  async function send(text, reply) {
    const body = reply.querySelector(".text");
    let received = 0;
    const response = await fetch(form.action, {
      method: "POST",
      body: new URLSearchParams({ textbox: text }),
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
      if (event.delta !== undefined) {
        if (received === 0) {
          reply.classList.remove("thinking");
          body.textContent = "";
        }
        received += 1;
        reply.dataset.deltas = String(received);
        body.textContent += event.delta;
        reply.scrollIntoView({ block: "end" });
      }
      if (event.done) {
        // The server's final text is what it kept, so the page and the history always agree.
        reply.classList.remove("thinking");
        body.textContent = event.reply;
        reply.removeAttribute("aria-busy");
        if (event.finish_reason === "cancelled") {
          if (!event.reply) throw new DOMException("Stopped before any text", "AbortError");
          reply.classList.add("stopped");
        }
      }
    });
    return received;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = textbox.value;
    if (!text.trim()) {
      showError("Type a message first.");
      return;
    }
    showError("");
    const question = addMessage("user", text.trim());
    const reply = addMessage("assistant", "Thinking");
    reply.classList.add("thinking");
    reply.setAttribute("aria-busy", "true");
    textbox.value = "";
    controller = new AbortController();
    setBusy(true);
    try {
      await send(text, reply);
    } catch (error) {
      const shown = body(reply).textContent !== "" && !reply.classList.contains("thinking");
      if (error.name === "AbortError" && shown) {
        // Stopped: the server keeps the part already shown, and so does the page.
        reply.classList.add("stopped");
        reply.removeAttribute("aria-busy");
      } else {
        // Nothing was kept on the server, so nothing stays here; the text goes back in the box.
        reply.remove();
        question.remove();
        textbox.value = text;
        if (error.name !== "AbortError") showError(error.message || "Could not reach the server.");
      }
    } finally {
      controller = null;
      stopButton.disabled = false;
      setBusy(false);
      textbox.focus();
    }
  });

  // Stop asks the server to end the generation; the stream then finishes with what was kept.
  // If the server cannot be told, hanging up stops it too.
  stopButton.addEventListener("click", async () => {
    const running = controller;
    if (!running) return;
    stopButton.disabled = true;
    try {
      const response = await fetch(stopUrl, { method: "POST", credentials: "same-origin" });
      if (!response.ok) running.abort();
    } catch (error) {
      running.abort();
    }
    setTimeout(() => { if (controller === running) running.abort(); }, 5000);
  });

  textbox.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!controller) form.requestSubmit();
    }
  });
})();
