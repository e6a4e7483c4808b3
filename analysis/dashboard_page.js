// larnn dashboard's additions to optuna-dashboard's page, which has no setting for either:
// - the study list names each study's objective (which numbers are test-picked) under its name;
// - a study whose trial numbers are no history (an unordered import) gets a sentence saying so
//   instead of the History panel, whose best-so-far line would draw the file names' order as a climb;
// - the importance panel says how sure its ranking is, or why it stays empty.
// What each study needs comes from /larnn/studies; optuna-dashboard renders the page with React, so
// the additions are applied again whenever the page changes.
(() => {
  "use strict";
  let studies = {};
  const MARK = "data-larnn";

  function labelStudyList() {
    if (!/\/dashboard\/?$/.test(location.pathname)) return; // the study list's page only
    const leaves = new Map(); // text -> element, one pass over the page for every study
    for (const e of document.querySelectorAll("body *")) {
      if (e.childElementCount === 0) leaves.set(e.textContent, e);
    }
    for (const [id, study] of Object.entries(studies)) {
      const title = leaves.get(`${id}. ${study.name}`);
      if (!title || title.nextElementSibling?.getAttribute(MARK) === "objective") continue;
      const label = document.createElement("div");
      label.setAttribute(MARK, "objective");
      label.style.cssText = "font-size: 0.85em; color: #555";
      label.textContent = `objective: ${study.objective}`;
      title.after(label);
    }
  }

  function cardOf(plotId) {
    return document.getElementById(plotId)?.closest(".MuiCard-root");
  }

  // A sentence above a card (text null: none), the card hidden if asked.
  function note(card, kind, text, hide) {
    const old = document.querySelector(`[${MARK}="${kind}"]`);
    if (card) card.style.display = text && hide ? "none" : "";
    if (!text || !card) {
      if (!text) old?.remove();
      return;
    }
    if (old && old.nextElementSibling === card && old.textContent === text) return;
    old?.remove();
    const box = document.createElement("div");
    box.setAttribute(MARK, kind);
    box.style.cssText = "padding: 8px 16px; border: 1px solid #ccc; border-radius: 4px";
    box.style.margin = hide ? getComputedStyle(card).margin : "0 0 16px 0"; // in the card's place, or above it
    box.textContent = text;
    card.before(box);
  }

  function annotateStudy() {
    const page = location.pathname.match(/\/dashboard\/studies\/(\d+)$/);
    const study = page ? studies[page[1]] : undefined;
    const why = study?.no_history;
    note(cardOf("plot-history"), "no-history", why && `History: not drawn. ${why}`, true);
    note(cardOf("graph-hyperparameter-importances"), "importance", study && `Importance: ${study.importance}`, false);
  }

  function apply() {
    labelStudyList();
    annotateStudy();
  }

  let pending = false;
  new MutationObserver(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      apply();
    });
  }).observe(document.documentElement, { childList: true, subtree: true });

  async function load() {
    try {
      studies = await (await fetch("/larnn/studies")).json();
      apply();
    } finally {
      setTimeout(load, 10000); // new experiments appear in the store while the page is open
    }
  }
  load();
})();
