// Test-only probe, added with page.add_init_script: it runs before the page's own scripts, so its
// window listeners see each keydown before (capture) and after (bubble) annotate.js handles it.
//
// window.__keys:  one entry per labeling key: the item on screen when it was pressed and whether
//                 the page acted on that card (accepted) or refused the key.
// window.__swaps: keypress -> a different, fresh card visible: `dom` when the DOM changed, `frame`
//                 at the next animation frame (the frame that paints it), both in ms.
(function () {
  "use strict";
  window.__keys = [];
  window.__swaps = [];
  const visibleCard = () => document.querySelector("#stage > .slot:not([hidden]) .item-card");
  const fresh = (card) => !!(card && card.dataset.itemId && !card.dataset.sent);
  let pending = null;

  window.addEventListener("keydown", (e) => {
    if (!/^([1-9s]|Enter)$/.test(e.key) || e.repeat) return;
    const card = visibleCard();
    pending = { key: e.key, card, item: card ? card.dataset.itemId || "" : "", wasFresh: fresh(card), t0: performance.now() };
  }, true);

  window.addEventListener("keydown", (e) => {
    if (!pending || pending.key !== e.key) return;
    const press = pending;
    pending = null;
    const accepted = press.wasFresh && !!(press.card && press.card.dataset.sent);
    window.__keys.push({ key: press.key, item: press.item, accepted });
    if (!accepted) return;
    const swapped = (t1) => {
      requestAnimationFrame(() => {
        window.__swaps.push({ key: press.key, from: press.item, to: visibleCard().dataset.itemId, dom: t1 - press.t0, frame: performance.now() - press.t0 });
      });
    };
    if (fresh(visibleCard()) && visibleCard() !== press.card) { swapped(performance.now()); return; }
    const observer = new MutationObserver(() => {
      const now = visibleCard();
      if (fresh(now) && now !== press.card) { observer.disconnect(); swapped(performance.now()); }
    });
    observer.observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ["hidden", "data-sent"] });
  }, false);
})();
