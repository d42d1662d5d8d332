// Keyboard-first review. One card at a time: a key sends the decision with htmx, and the response
// (the next item of the same queue, plus fresh queue counts) replaces the card.
// Keys: a approve, 1..9 correct to that category, r reject, n note, ? help.
// Multi-label projects: 1..9 (and 0, "none of these", where allowed) tick boxes; Enter corrects to
// the ticked set.
(function () {
  "use strict";
  const root = document.getElementById("review");
  const slot = () => document.getElementById("review-slot");
  const card = () => slot().querySelector(".item-card");
  const form = () => slot().querySelector("form.review-form");
  const status = (text, tone) => {
    const el = document.getElementById("status");
    el.textContent = text || "";
    if (tone) el.dataset.tone = tone; else delete el.dataset.tone;
  };

  function markShown() {
    const c = card();
    if (c && !c.dataset.shownAt) c.dataset.shownAt = String(performance.now());
  }

  function fill(f, name, value) {
    const input = f.querySelector('input[type=hidden][name="' + name + '"]');
    input.value = value;
    input.disabled = false;
  }

  // Send one decision for the card on screen: approve, reject, or correct to a category id.
  function decide(decision, categoryId) {
    const f = form();
    if (!f || f.dataset.sent) return; // one keypress, one request
    if (decision === "approve" && card().dataset.canApprove !== "true") {
      status(card().querySelector(".approve-reason").textContent, "error");
      return;
    }
    f.dataset.sent = "1";
    f.querySelector("[name=duration_ms]").value =
      Math.round(performance.now() - Number(card().dataset.shownAt || performance.now()));
    if (decision === "correct" && !categoryId && f.querySelector(".choices.multi")) {
      if (!f.querySelector("input[name=correct_set]:checked, input[name=none_of_these]:checked")) {
        delete f.dataset.sent;
        status("Tick at least one category (number keys), then press Enter.", "error");
        return;
      }
    }
    if (categoryId) fill(f, "correct_to", categoryId); else fill(f, "decision", decision);
    slot().classList.add("sending");
    status("Saving…", "busy");
    f.requestSubmit();
  }

  function reload() {
    htmx.ajax("GET", root.dataset.queueUrl, { target: "#review-slot", swap: "innerHTML" });
  }

  document.body.addEventListener("htmx:afterSwap", (e) => {
    if (e.detail.target.id !== "review-slot") return;
    slot().classList.remove("sending");
    markShown();
  });
  document.body.addEventListener("review:decided", (e) => status(e.detail.message));
  document.body.addEventListener("htmx:responseError", (e) => {
    slot().classList.remove("sending");
    status("Not saved: " + (e.detail.xhr.responseText || e.detail.xhr.statusText), "error");
    reload();
  });
  document.body.addEventListener("htmx:sendError", () => {
    slot().classList.remove("sending");
    const f = form();
    if (f) delete f.dataset.sent; // nothing reached the server: the same keypress may be retried
    status("Connection lost: that decision was not saved. Try the key again.", "error");
  });

  function toggleShortcuts() {
    const dialog = document.getElementById("shortcuts");
    if (dialog.open) dialog.close(); else dialog.showModal();
  }
  document.getElementById("shortcuts-toggle").addEventListener("click", toggleShortcuts);

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const t = e.target;
    if (t && t.classList && t.classList.contains("review-note") && e.key === "Escape") { e.preventDefault(); t.blur(); return; }
    if (t && (t.isContentEditable || /^(TEXTAREA|SELECT)$/.test(t.tagName))) return;
    if (t && t.tagName === "INPUT" && t.type !== "checkbox") return;
    if (e.key === "?") { e.preventDefault(); toggleShortcuts(); return; }
    if (document.getElementById("shortcuts").open || !form()) return;
    const box = e.key.length === 1 && form().querySelector('.choices.multi input[data-key="' + e.key + '"]');
    if (box) {
      e.preventDefault();
      box.checked = !box.checked;
      exclusive(box);
      status("");
    } else if (e.key === "Enter" && form().querySelector(".choices.multi")) {
      e.preventDefault(); decide("correct");
    } else if (e.key >= "1" && e.key <= "9") {
      const button = form().querySelector('.choices button[data-key="' + e.key + '"]');
      if (button) { e.preventDefault(); decide("correct", button.value); }
    } else if (e.key === "a") {
      e.preventDefault(); decide("approve");
    } else if (e.key === "r") {
      e.preventDefault(); decide("reject");
    } else if (e.key === "n") {
      e.preventDefault(); form().querySelector(".review-note").focus();
    }
  });

  // "None of these" and the categories exclude each other.
  function exclusive(box) {
    if (!box.checked) return;
    const others = box.name === "none_of_these" ? "input[name=correct_set]" : "input[name=none_of_these]";
    for (const other of box.form.querySelectorAll(others)) other.checked = false;
  }
  document.addEventListener("change", (e) => {
    if (e.target.matches && e.target.matches(".review-form .choices.multi input[type=checkbox]")) exclusive(e.target);
  });

  // Clicks take the same path as keys (one request, duration measured).
  document.addEventListener("click", (e) => {
    const button = e.target.closest && e.target.closest("#review-slot form.review-form button[type=submit]");
    if (!button) return;
    e.preventDefault();
    if (button.name === "correct_to") decide("correct", button.value); else decide(button.value);
  });

  markShown();
})();
