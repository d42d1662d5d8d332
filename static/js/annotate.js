// Keyboard-first annotation (templates/labeling/annotate.html, _stage.html, _item.html).
//
// Two slots hold the card on screen and the next one, already fetched. A keypress binds the label
// to the card on screen (its form carries the item id and a request id), shows the prefetched card
// at once and lets htmx post the label in the background; the answer (the card after that) refills
// the slot just left.
//
// Rules that keep labels right when keys come faster than answers:
// - Requests leave one at a time, in keypress order (hx-sync="this:queue all" on #annotate). Each
//   tells the server which item the other slot holds (`holding`), and that is only true once the
//   requests before it have been answered; concurrent refills could hand both slots one item.
// - A card is acted on once. A key pressed while no fresh card is on screen (the person is faster
//   than the server) labels nothing and says so: a label never goes to an item not yet seen.
// - The chosen category is set on the request itself (htmx:configRequest), not read from whichever
//   button htmx last saw focused or clicked.
// - A dropped connection resends the same form, whose request id the server stores once.
(function () {
  "use strict";
  const root = document.getElementById("annotate");
  if (!root) return;

  const undoForm = document.getElementById("undo-form");
  const shortcuts = document.getElementById("shortcuts");
  const shortcutsToggle = document.getElementById("shortcuts-toggle");
  const guidelines = document.getElementById("guidelines-panel");
  const guidelinesToggle = document.getElementById("guidelines-toggle");
  const statusLine = document.getElementById("status");
  const labeledToday = document.getElementById("labeled-today");
  const GUIDELINES_KEY = "labelloop.guidelines";
  let undoing = false;

  const stage = () => document.getElementById("stage");
  const slots = () => Array.from(stage().children).filter((el) => el.classList.contains("slot"));
  const slotOf = (elt) => (elt && elt.closest ? elt.closest("#stage > .slot") : null);
  const cardIn = (slot) => (slot ? slot.querySelector(".item-card") : null);
  const itemIn = (slot) => { const card = cardIn(slot); return (card && card.dataset.itemId) || ""; };
  // Ready: an item nobody has acted on yet.
  const isReady = (slot) => { const card = cardIn(slot); return !!(card && card.dataset.itemId && !card.dataset.sent); };
  const visibleSlot = () => slots().find((slot) => !slot.hidden);
  const otherSlot = (slot) => slots().find((s) => s !== slot);

  let saidAt = 0;
  function say(text, tone) {
    statusLine.textContent = text || "";
    statusLine.dataset.tone = tone || "";
    saidAt = performance.now();
  }
  // The next keypress clears the status line, but an error stays long enough to be read.
  function clearStatus() {
    if (statusLine.dataset.tone !== "error" || performance.now() - saidAt > 4000) say("");
  }

  function show(slot) {
    const focusWasIn = slotOf(document.activeElement);
    for (const s of slots()) s.hidden = s !== slot;
    const card = cardIn(slot);
    if (!card) return;
    if (!card.dataset.shownAt) card.dataset.shownAt = String(performance.now());
    // A focused button in the slot just hidden would drop keyboard focus to <body>.
    if (focusWasIn && focusWasIn !== slot) card.focus({ preventScroll: true });
  }

  // Keep a fresh card on screen when there is one; a card already acted on stays (dimmed) only
  // while nothing fresh has arrived.
  function settle() {
    const visible = visibleSlot();
    const other = otherSlot(visible);
    show(isReady(visible) || !isReady(other) ? visible : other);
    if (isReady(visibleSlot()) && statusLine.dataset.tone === "busy") say("");
  }

  // Label or skip the card in `slot`, through `form`, exactly once. `category`: the key's category
  // (single-label); a multi-label form sends its ticked boxes instead.
  function act(slot, form, category) {
    if (undoing) { say("One moment: your last label is being undone.", "busy"); return; }
    if (!isReady(slot)) { say("The next item is still on its way; press again once it shows.", "busy"); return; }
    const labeling = form.classList.contains("label-form");
    const multi = form.classList.contains("multi");
    if (labeling && multi && !form.querySelector("input[name=category]:checked, input[name=none_of_these]:checked")) {
      const none = form.querySelector("input[name=none_of_these]") ? " or “none of these” (0)" : "";
      say("Tick at least one category (keys 1–9)" + none + ", then press Enter.", "busy");
      return;
    }
    clearStatus();
    const card = cardIn(slot);
    card.dataset.sent = labeling ? "label" : "skip";
    card.setAttribute("aria-busy", "true");
    slot.dataset.awaiting = card.dataset.sent;
    if (labeling && !multi) form.dataset.category = category;
    const duration = form.elements.namedItem("duration_ms");
    if (duration) duration.value = String(Math.round(performance.now() - Number(card.dataset.shownAt || performance.now())));
    send(form);
    settle();
    if (!isReady(visibleSlot())) say("Sending… the next item is on its way.", "busy");
  }

  function send(form) {
    htmx.process(form); // a card swapped in this very moment may not be wired up yet
    form.requestSubmit();
  }

  function refill(slot) {
    slot.dataset.awaiting = "refill";
    htmx.ajax("GET", root.dataset.nextUrl, { source: slot, target: slot, swap: "innerHTML settle:0ms" })
      .catch(() => {}); // failures arrive as htmx events, handled below
  }

  // Resend what the slot is waiting for: the same label or skip (same request id), or a refill.
  function resend(slot) {
    const card = cardIn(slot);
    const form = card && card.dataset.sent && slot.dataset.awaiting !== "refill"
      ? card.querySelector(card.dataset.sent === "label" ? ".label-form" : ".skip-form")
      : null;
    if (form) send(form); else refill(slot);
  }

  // Retry at once, then less and less often (1 s, 2 s, 4 s … 15 s) while the server is unreachable.
  // An undo in progress goes first: it may redraw the stage, and then this slot is gone.
  function later(slot, action) {
    const attempts = Number(slot.dataset.attempts || 0);
    slot.dataset.attempts = String(attempts + 1);
    const run = () => {
      if (!slot.isConnected) return;
      if (undoing) setTimeout(run, 100); else action(slot);
    };
    setTimeout(run, attempts === 0 ? 0 : Math.min(15000, 1000 * 2 ** (attempts - 1)));
  }

  function count(by) {
    const n = Math.max(0, Number(labeledToday.dataset.count || 0) + by);
    labeledToday.dataset.count = String(n);
    labeledToday.textContent = String(n);
  }

  function reason(xhr) {
    const type = xhr.getResponseHeader("Content-Type") || "";
    if (type.startsWith("text/plain") && xhr.responseText) return xhr.responseText;
    return "The server answered " + xhr.status + " " + xhr.statusText + ".";
  }

  document.body.addEventListener("htmx:configRequest", (e) => {
    const elt = e.detail.elt;
    const slot = slotOf(elt);
    if (!slot) return;
    const held = itemIn(otherSlot(slot));
    e.detail.parameters.holding = held ? [held] : [];
    if (elt.dataset && elt.dataset.category) e.detail.parameters.category = [elt.dataset.category];
  });

  document.body.addEventListener("htmx:afterSwap", (e) => {
    const slot = e.detail.target;
    if (!slot.matches || !slot.matches("#stage > .slot")) return;
    if (slot.dataset.awaiting === "label") count(1);
    delete slot.dataset.awaiting;
    slot.dataset.attempts = "0";
    settle();
    // The other slot came back empty earlier (the queue looked empty then): now that items flow
    // again, ask once for a card to prefetch behind this one.
    const other = otherSlot(slot);
    if (isReady(slot) && other && !itemIn(other) && !other.dataset.awaiting) refill(other);
  });

  // Refused (409: lease lost, already labeled …) or a server error: say why and let the server
  // decide what the slot shows next; a card that is still this person's comes back.
  document.body.addEventListener("htmx:responseError", (e) => {
    const slot = slotOf(e.detail.elt);
    if (!slot) return;
    say(reason(e.detail.xhr), "error");
    later(slot, refill);
  });

  const unreachable = (e) => {
    const slot = slotOf(e.detail.elt);
    if (!slot) return;
    say("Cannot reach the server; retrying. Nothing you labeled is lost.", "error");
    later(slot, resend);
  };
  document.body.addEventListener("htmx:sendError", unreachable);
  document.body.addEventListener("htmx:timeout", unreachable);

  function undo() {
    if (undoing) return;
    undoing = true;
    stage().setAttribute("aria-busy", "true"); // the answer redraws the stage without it
    say("Undoing your last label…", "busy");
    send(undoForm); // queued behind labels still in flight, so it undoes the latest one
  }

  undoForm.addEventListener("htmx:afterRequest", (e) => {
    undoing = false;
    stage().removeAttribute("aria-busy");
    if (e.detail.successful) {
      count(-1);
      settle();
      say("Your last label was taken back; the item is on screen again.");
    } else if (e.detail.xhr && e.detail.xhr.status) {
      say(reason(e.detail.xhr), "error");
    } else {
      say("Cannot reach the server, so the undo may not have happened. Reload the page to see where you are.", "error");
    }
  });

  function toggleGuidelines(open) {
    const show = open === undefined ? guidelines.hidden : open;
    guidelines.hidden = !show;
    guidelinesToggle.setAttribute("aria-expanded", String(show));
    try { localStorage.setItem(GUIDELINES_KEY, show ? "open" : "closed"); } catch (_) { /* private mode */ }
  }

  function toggleShortcuts() {
    if (shortcuts.open) shortcuts.close(); else shortcuts.showModal();
  }

  function label(key) {
    const slot = visibleSlot();
    const box = slot && slot.querySelector('.label-form.multi input[data-key="' + key + '"]');
    const button = slot && slot.querySelector('.label-form button[data-key="' + key + '"]');
    if (box) { if (isReady(slot)) { box.checked = !box.checked; exclusive(box); } }
    else if (button) act(slot, button.form, button.value);
    else if (!itemIn(slot)) say("Nothing to label right now.");
  }

  // "None of these" and the categories exclude each other: ticking one unticks the other side.
  function exclusive(box) {
    if (!box.checked) return;
    const others = box.name === "none_of_these" ? "input[name=category]" : "input[name=none_of_these]";
    for (const other of box.form.querySelectorAll(others)) other.checked = false;
  }
  document.addEventListener("change", (e) => {
    if (e.target.matches && e.target.matches(".label-form.multi input[type=checkbox]")) exclusive(e.target);
  });

  function sendTicked() {
    const slot = visibleSlot();
    const form = slot && slot.querySelector(".label-form.multi");
    if (form) act(slot, form, "");
  }

  function skip() {
    const slot = visibleSlot();
    const form = slot && slot.querySelector(".skip-form");
    if (form) act(slot, form, "");
  }

  const keys = { s: skip, u: undo, g: () => toggleGuidelines(), "?": toggleShortcuts, Enter: sendTicked };
  for (let digit = 0; digit <= 9; digit++) keys[String(digit)] = () => label(String(digit));

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
    const t = e.target;
    if (t && (t.isContentEditable || /^(TEXTAREA|SELECT)$/.test(t.tagName))) return;
    if (t && t.tagName === "INPUT" && !/^(checkbox|radio)$/.test(t.type)) return;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    // Enter on a focused button or link does what that control does (a click), nothing more.
    if (key === "Enter" && t && t.closest && t.closest("button, a, summary")) return;
    if (!Object.prototype.hasOwnProperty.call(keys, key)) return;
    if (shortcuts.open && key !== "?") return; // Esc closes the dialog natively
    e.preventDefault();
    if (e.repeat) return; // a held key labels one item, not a run of them
    keys[key]();
  });

  // Clicks take the same path as keys: instant swap, one request per card.
  document.addEventListener("click", (e) => {
    const button = e.target.closest ? e.target.closest("button") : null;
    if (!button || !button.form) return;
    const slot = slotOf(button);
    if (slot && button.form.matches(".label-form, .skip-form")) {
      e.preventDefault();
      act(slot, button.form, button.form.matches(".label-form") ? button.value : "");
    } else if (button.form === undoForm) {
      e.preventDefault();
      undo();
    }
  });

  guidelinesToggle.addEventListener("click", (e) => { e.preventDefault(); toggleGuidelines(); });
  shortcutsToggle.addEventListener("click", toggleShortcuts);
  shortcutsToggle.hidden = false;

  // Leaving while a label is unanswered could lose it: ask first.
  window.addEventListener("beforeunload", (e) => {
    if (slots().some((slot) => slot.dataset.awaiting === "label")) e.preventDefault();
  });

  try { if (localStorage.getItem(GUIDELINES_KEY) === "open") toggleGuidelines(true); } catch (_) { /* private mode */ }
  root.classList.add("ready");
  settle();
})();
