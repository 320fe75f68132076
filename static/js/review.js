// Lead review: the stream's keys (A approve, R reject, J/K next/previous, ? help), the comment a rejection
// needs (said inline before anything is sent), errors from the server shown in place, the filter bar,
// and the grouped category picker of the disagreements page. No user text is ever written as HTML here.
(function () {
  "use strict";

  const ERROR_STATUSES = [400, 409, 422];

  // ---- errors: htmx leaves 4xx answers unswapped; the review form's own error partial must show ----------
  document.addEventListener("htmx:beforeSwap", function (event) {
    const detail = event.detail;
    const source = (detail.requestConfig && detail.requestConfig.elt) || detail.elt;
    if (!source || !source.closest || !source.closest(".review-form")) return;
    if (ERROR_STATUSES.indexOf(detail.xhr.status) >= 0) {
      detail.shouldSwap = true;
      detail.isError = false;
    }
  });
  // the form came back with the server's message: back to the comment box, a rejection under way
  document.addEventListener("htmx:afterSettle", function () {
    const box = document.querySelector(".review-form textarea[aria-invalid=true]");
    if (box && document.activeElement !== box) startRejecting(box.form);
  });
  // a network failure or a 5xx: say so beside the buttons instead of doing nothing
  document.addEventListener("htmx:responseError", function (event) {
    const source = event.detail.elt;
    const form = source && source.closest && source.closest(".review-form");
    if (form && ERROR_STATUSES.indexOf(event.detail.xhr.status) < 0) showNote(form, "The server could not save this review (" + event.detail.xhr.status + "). Try again.");
  });
  document.addEventListener("htmx:sendError", function (event) {
    const form = event.detail.elt && event.detail.elt.closest && event.detail.elt.closest(".review-form");
    if (form) showNote(form, "The server could not be reached. Try again.");
  });

  function comment(form) { return form.querySelector("textarea[name=comment]"); }
  function note(form) { return form.querySelector(".comment-required"); }
  function showNote(form, text) {
    const el = note(form);
    if (!el) return;
    if (text) el.textContent = text;
    el.hidden = false;
  }

  // ---- a rejection needs a comment: checked here first, and by the server (apply_review) anyway ----------
  function startRejecting(form) {
    form.dataset.intent = "reject";
    const box = comment(form);
    box.required = true;
    box.focus();
  }
  function rejectBlocked(form) {
    const box = comment(form);
    if (box.value.trim() !== "") return false;
    box.setAttribute("aria-invalid", "true");
    showNote(form, "Say why it is rejected: the annotator sees this comment.");
    startRejecting(form);
    return true;
  }
  document.addEventListener("click", function (event) {
    const button = event.target.closest && event.target.closest(".review-form button[name=decision]");
    if (!button) return;
    const form = button.form;
    if (form.classList.contains("htmx-request")) { event.preventDefault(); return; } // one answer per item
    if (button.value === "reject" && rejectBlocked(form)) event.preventDefault();
  }, true);
  document.addEventListener("input", function (event) {
    const box = event.target;
    if (!box.matches || !box.matches(".review-form textarea[name=comment]")) return;
    if (box.value.trim() !== "") {
      box.removeAttribute("aria-invalid");
      const el = note(box.form);
      if (el) el.hidden = true;
    }
  });

  // ---- keys on the stream ------------------------------------------------------------------------------
  const stream = document.getElementById("stream-item");
  const keys = document.getElementById("review-keys");
  function currentForm() { return stream ? stream.querySelector(".review-form") : null; }
  function press(selector) {
    const el = stream && stream.querySelector(selector);
    if (el) el.click();
    return Boolean(el);
  }
  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }
  document.querySelectorAll("[data-open-keys]").forEach(function (b) {
    b.addEventListener("click", function () { if (keys) keys.showModal(); });
  });

  document.addEventListener("keydown", function (event) {
    if (!stream || event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    const form = currentForm();
    // inside the comment box: Enter sends a rejection that was started with R (Shift+Enter: a new line)
    if (form && target === comment(form)) {
      if (event.key === "Escape") { target.blur(); delete form.dataset.intent; return; }
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && form.dataset.intent === "reject") {
        event.preventDefault();
        press(".review-form button[value=reject]");
      }
      return;
    }
    if (typing(target) || document.querySelector("dialog[open]")) return;
    const key = event.key;
    let handled = true;
    if (key === "a" || key === "A") handled = press(".review-form button[value=approve]");
    else if ((key === "r" || key === "R") && form) startRejecting(form);
    else if (key === "j" || key === "J" || key === "ArrowRight") handled = press("#stream-next");
    else if (key === "k" || key === "K" || key === "ArrowLeft") handled = press("#stream-prev");
    else if (key === "?" && keys) keys.showModal();
    else handled = false;
    if (handled) event.preventDefault();
  });
  // after a swap the focused element may be gone: keys keep working from the page
  document.addEventListener("htmx:afterSettle", function (event) {
    if (stream && event.detail.target === stream && !stream.contains(document.activeElement)) {
      if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
    }
  });

  // ---- the filter bar applies itself -------------------------------------------------------------------
  const filters = document.getElementById("review-filters");
  if (filters) {
    filters.addEventListener("change", function (event) {
      if (event.target.matches("select, input[type=checkbox]")) filters.requestSubmit();
    });
  }

  // ---- disagreements: grouped category picker with a filter box -----------------------------------------
  document.querySelectorAll("[data-cat-picker]").forEach(function (picker) {
    const search = picker.querySelector(".cat-filter");
    const summary = picker.querySelector(".picked");
    const options = Array.from(picker.querySelectorAll(".cat-option"));
    const groups = Array.from(picker.querySelectorAll(".cat-group"));
    function refresh() {
      const chosen = options.filter(function (o) { return o.querySelector("input").checked; })
        .map(function (o) { return o.dataset.label; });
      summary.textContent = chosen.length ? chosen.join(", ") : "none chosen";
    }
    function filter() {
      const q = search.value.trim().toLowerCase();
      options.forEach(function (o) { o.hidden = q !== "" && o.dataset.name.indexOf(q) < 0; });
      groups.forEach(function (g) {
        g.hidden = !Array.from(g.querySelectorAll(".cat-option")).some(function (o) { return !o.hidden; });
      });
    }
    picker.addEventListener("change", refresh);
    if (search) {
      search.addEventListener("input", filter);
      search.addEventListener("keydown", function (e) { if (e.key === "Enter") e.preventDefault(); });
    }
    const form = picker.closest("form");
    if (form) {
      form.querySelectorAll("input[name=verdict]").forEach(function (radio) {
        radio.addEventListener("change", function () {
          if (radio.checked && radio.value === "unreasonable") { picker.open = true; if (search) search.focus(); }
        });
      });
    }
    refresh();
  });
})();
