// Send messages without reloading the page; without JavaScript the form posts as usual.
(function () {
  "use strict";
  const form = document.getElementById("chat-form");
  if (!form || !window.fetch) return;
  const textbox = document.getElementById("textbox");
  const sendButton = document.getElementById("send");
  const conversation = document.getElementById("conversation");
  const errorBox = document.getElementById("error");

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

  async function send(text) {
    const response = await fetch(form.action, {
      method: "POST",
      body: new URLSearchParams({ textbox: text }),
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const message = data && data.error ? data.error.message : "The server answered " + response.status + ".";
      throw new Error(message);
    }
    return data;
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
    const pending = addMessage("assistant", "Thinking");
    pending.classList.add("thinking");
    pending.setAttribute("aria-busy", "true");
    textbox.value = "";
    sendButton.disabled = true;
    try {
      const data = await send(text);
      pending.querySelector(".text").textContent = data.reply;
      pending.classList.remove("thinking");
      pending.removeAttribute("aria-busy");
    } catch (error) {
      // The server keeps no half turn, so neither does the page; the text goes back in the box.
      pending.remove();
      question.remove();
      textbox.value = text;
      showError(error.message || "Could not reach the server.");
    } finally {
      sendButton.disabled = false;
      textbox.focus();
    }
  });

  textbox.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
})();
