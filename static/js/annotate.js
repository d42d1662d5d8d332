// Keyboard-first annotation. Two slots hold the item on screen and the next one, already
// prefetched: a keypress shows the prefetched item at once while htmx posts the label in the
// background; the response (the item after that) refills the slot just left.
(function () {
  "use strict";
  const stage = () => document.getElementById("stage");
  const slots = () => Array.from(stage().querySelectorAll(".slot"));
  const card = (slot) => slot && slot.querySelector(".item-card");
  const hasItem = (slot) => !!(card(slot) && card(slot).dataset.itemId);
  const visibleSlot = () => slots().find((s) => !s.hidden);
  const otherSlot = (slot) => slots().find((s) => s !== slot);
  const status = (text) => { document.getElementById("status").textContent = text || ""; };

  function markShown(slot) {
    const c = card(slot);
    if (c && !c.dataset.shownAt) c.dataset.shownAt = String(performance.now());
  }
  function show(slot) {
    slots().forEach((s) => { s.hidden = s !== slot; });
    markShown(slot);
  }

  // Send a label or a skip from the visible card, then show the prefetched card immediately.
  function act(form, submitter) {
    if (!form || form.dataset.sent) return; // one keypress, one request
    form.dataset.sent = "1";
    const from = form.closest(".slot");
    const c = card(from);
    const duration = form.querySelector("[name=duration_ms]");
    if (duration && c) duration.value = Math.round(performance.now() - Number(c.dataset.shownAt || performance.now()));
    // The chosen category travels in a hidden field: a keypress has no clicked button to carry it.
    const chosen = form.querySelector("input[name=category]");
    if (chosen && submitter) { chosen.value = submitter.value; chosen.disabled = false; }
    form.requestSubmit();
    const next = otherSlot(from);
    if (hasItem(next)) show(next); else from.classList.add("sending");
  }

  document.body.addEventListener("htmx:configRequest", (e) => {
    const slot = e.detail.elt.closest && e.detail.elt.closest(".slot");
    if (!slot) return;
    const held = card(otherSlot(slot));
    if (held && held.dataset.itemId) e.detail.parameters.holding = held.dataset.itemId;
  });

  document.body.addEventListener("htmx:afterSwap", (e) => {
    if (e.detail.target.id === "stage" || e.detail.target.closest("#stage")) {
      const target = e.detail.target.classList.contains("slot") ? e.detail.target : null;
      if (target) target.classList.remove("sending");
      const visible = visibleSlot();
      // The slot on screen may have run dry (no prefetched item): show whatever has an item.
      if (!hasItem(visible) && target && hasItem(target)) show(target);
      else if (target && target === visible) markShown(target);
      if (e.detail.target.id === "stage") show(slots()[0]);
      status("");
    }
  });

  function refill(slot) {
    const held = card(otherSlot(slot));
    const holding = held && held.dataset.itemId ? "?holding=" + held.dataset.itemId : "";
    htmx.ajax("GET", document.getElementById("annotate").dataset.nextUrl + holding, { target: slot, swap: "innerHTML" });
  }

  function failed(e, message) {
    const slot = e.detail.elt.closest && e.detail.elt.closest(".slot");
    status(message);
    if (slot) { slot.classList.remove("sending"); refill(slot); }
  }
  document.body.addEventListener("htmx:responseError", (e) => {
    failed(e, "Not saved: " + (e.detail.xhr.responseText || e.detail.xhr.statusText));
  });
  document.body.addEventListener("htmx:sendError", (e) => {
    failed(e, "Connection lost: that label was not saved; the item will come back to you.");
  });

  function toggleGuidelines() {
    const panel = document.getElementById("guidelines-panel");
    if (panel.innerHTML.trim()) panel.innerHTML = "";
    else document.getElementById("guidelines-toggle").click();
  }
  function toggleShortcuts() {
    const dialog = document.getElementById("shortcuts");
    if (dialog.open) dialog.close(); else dialog.showModal();
  }
  document.getElementById("shortcuts-toggle").addEventListener("click", toggleShortcuts);

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const t = e.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    if (e.key === "?") { e.preventDefault(); toggleShortcuts(); return; }
    if (document.getElementById("shortcuts").open) return;
    const slot = visibleSlot();
    if (e.key >= "1" && e.key <= "9") {
      const button = slot && slot.querySelector('.label-form button[data-key="' + e.key + '"]');
      if (button) { e.preventDefault(); act(button.form, button); }
    } else if (e.key === "s") {
      const button = slot && slot.querySelector('.skip-form button[data-key="s"]');
      if (button) { e.preventDefault(); act(button.form, button); }
    } else if (e.key === "u") {
      e.preventDefault(); document.getElementById("undo-form").requestSubmit();
    } else if (e.key === "g") {
      e.preventDefault(); toggleGuidelines();
    }
  });

  // Mouse clicks take the same path as keys, so clicking also swaps instantly.
  document.addEventListener("click", (e) => {
    const button = e.target.closest && e.target.closest(".slot button[type=submit]");
    if (!button) return;
    e.preventDefault();
    act(button.form, button);
  });

  markShown(visibleSlot());
})();
