// Annotator workspace: the item under review in view, keyboard (categories by number or by search),
// autosave (server + this browser), lock heartbeat, a confirm step for contradictory labels, and on the
// compare page the words that differ between the two answers highlighted.
// Model text is only ever read with textContent and wrapped with DOM nodes: never innerHTML.
(function () {
  "use strict";
  const form = document.getElementById("task-form");
  if (!form) return;
  const kind = form.dataset.kind;
  const mode = form.dataset.mode;
  // submitted: the annotator's own work waiting for review, changed by submitting again
  const editable = mode === "editable" || mode === "fix" || mode === "submitted";
  const serverDrafts = mode === "editable" || mode === "fix";
  const storageKey = form.dataset.storageKey;
  const saveState = document.getElementById("save-state");
  const keys = document.getElementById("keys");
  const confirmDialog = document.getElementById("confirm-dialog");
  const started = Date.now();
  const timeField = form.querySelector("input[name=time_spent_ms]");
  const baseTime = parseInt(timeField && timeField.value, 10) || 0;

  function setState(text) { if (saveState) saveState.textContent = text; }
  function spent() { return baseTime + (Date.now() - started); }

  // ---- the item under review in view: older context is collapsed, the pane scrolls to the item ------
  const pane = document.getElementById("context-pane");
  const focusItem = document.querySelector("[data-focus]");
  function reveal() {
    if (!pane || !focusItem) return;
    const scrolls = getComputedStyle(pane).overflowY === "auto" && pane.scrollHeight > pane.clientHeight;
    if (!scrolls) { focusItem.scrollIntoView({ block: "nearest" }); return; }
    const p = pane.getBoundingClientRect();
    const r = focusItem.getBoundingClientRect();
    const margin = 12;
    if (r.top >= p.top && r.bottom <= p.bottom) return;
    const top = r.top - p.top + pane.scrollTop;
    // all of it with as much context above as fits, else its start at the top
    pane.scrollTop = r.height + 2 * margin <= p.height ? top + r.height - p.height + margin : top - margin;
  }
  const earlier = document.getElementById("earlier-context");
  function toggleEarlier() {
    if (!earlier) return;
    earlier.open = !earlier.open;
    if (earlier.open) earlier.scrollIntoView({ block: "start" }); else reveal();
  }

  // ---- categories: numbered 1..N as shown; a number of two digits is typed as two keys ------------
  const search = document.getElementById("cat-search");
  const tree = document.getElementById("cat-tree");
  const chordState = document.getElementById("chord-state");
  let active = -1; // the leaf the search's arrows point at
  function visibleLeaves() {
    return tree ? Array.from(tree.querySelectorAll("li:not(.group)")).filter((li) => !li.hidden) : [];
  }
  function renumber() {
    if (!tree) return;
    tree.querySelectorAll("kbd.num").forEach((k) => { k.textContent = ""; });
    visibleLeaves().forEach((li, i) => { li.querySelector("kbd.num").textContent = String(i + 1); });
  }
  function markActive(index) {
    const leaves = visibleLeaves();
    tree.querySelectorAll("li.active").forEach((li) => li.classList.remove("active"));
    active = leaves.length ? Math.max(0, Math.min(index, leaves.length - 1)) : -1;
    if (active >= 0) { leaves[active].classList.add("active"); leaves[active].scrollIntoView({ block: "nearest" }); }
  }
  function filterCategories() {
    const q = (search.value || "").trim().toLowerCase();
    const items = Array.from(tree.querySelectorAll("li"));
    items.forEach((li) => { if (!li.classList.contains("group")) li.hidden = q !== "" && !li.dataset.name.includes(q); });
    // a group stays visible when any of the leaves after it (until the next group) is visible
    items.forEach((li, i) => {
      if (!li.classList.contains("group")) return;
      let any = false;
      for (let j = i + 1; j < items.length && !items[j].classList.contains("group"); j++) any = any || !items[j].hidden;
      li.hidden = q !== "" && !any;
    });
    renumber();
    if (q !== "") markActive(0);
    else { active = -1; tree.querySelectorAll("li.active").forEach((li) => li.classList.remove("active")); }
  }
  function toggleLeaf(li) {
    if (!li) return;
    const box = li.querySelector("input[type=checkbox]");
    if (box.disabled || !editable) return;
    box.checked = !box.checked;
    li.classList.add("flash-pick");
    setTimeout(() => li.classList.remove("flash-pick"), 400);
    saveSoon();
  }
  let pending = null; // the first digit of a two-digit number
  let pendingTimer = null;
  function showChord(text) { if (chordState) chordState.textContent = text; }
  function flushChord() {
    if (pending === null) return;
    const n = pending;
    pending = null;
    clearTimeout(pendingTimer);
    showChord("");
    toggleLeaf(visibleLeaves()[n - 1]);
  }
  function typeDigit(d) {
    const count = visibleLeaves().length;
    if (pending !== null) {
      const n = pending * 10 + d;
      if (n <= count) {
        pending = null;
        clearTimeout(pendingTimer);
        showChord("");
        toggleLeaf(visibleLeaves()[n - 1]);
        return;
      }
      flushChord();
    }
    if (d === 0) return;
    if (d * 10 <= count) { // 1 could be 1 or 10..19: wait a moment for a second digit
      pending = d;
      showChord(d + "…");
      pendingTimer = setTimeout(flushChord, 900);
      return;
    }
    toggleLeaf(visibleLeaves()[d - 1]);
  }
  if (search && tree) {
    search.addEventListener("input", filterCategories);
    search.addEventListener("keydown", (e) => {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        markActive(active + (e.key === "ArrowDown" ? 1 : -1));
      } else if (e.key === "Enter" && !(e.ctrlKey || e.metaKey)) {
        e.preventDefault(); // Enter picks; it never submits the form from here
        const leaves = visibleLeaves();
        toggleLeaf(leaves[active >= 0 ? active : 0]);
        search.value = "";
        filterCategories();
      }
    });
    search.addEventListener("blur", () => tree.querySelectorAll("li.active").forEach((li) => li.classList.remove("active")));
    renumber();
  }

  // ---- drafts: this browser at once, the server a moment later ------------------------------
  function fields() {
    const data = {};
    new FormData(form).forEach((value, key) => {
      if (key === "csrfmiddlewaretoken") return;
      if (key in data) data[key] = [].concat(data[key], value); else data[key] = value;
    });
    data.categories = [].concat(data.categories || []);
    return data;
  }
  function keepLocally(extra) {
    if (!editable) return;
    try { localStorage.setItem(storageKey, JSON.stringify(Object.assign({ at: Date.now(), fields: fields() }, extra || {}))); } catch (e) { /* storage full or blocked */ }
  }
  let timer = null;
  function saveSoon() {
    if (!editable) return;
    timeField.value = spent();
    keepLocally();
    if (!serverDrafts) { setState("changed: submit again to save"); return; }
    setState("editing…");
    clearTimeout(timer);
    timer = setTimeout(saveNow, 700);
  }
  function saveNow() {
    timeField.value = spent();
    return fetch(form.dataset.draftUrl, { method: "POST", body: new FormData(form), credentials: "same-origin" })
      .then((r) => r.json().then((body) => ({ ok: r.ok, body })))
      .then(({ ok, body }) => setState(ok ? "draft saved " + new Date().toLocaleTimeString() : (body.error || "not saved")))
      .catch(() => setState("offline — your changes are kept in this browser"));
  }
  function restore() {
    let stored = null;
    try { stored = JSON.parse(localStorage.getItem(storageKey) || "null"); } catch (e) { stored = null; }
    if (!stored) return;
    if (!editable) { localStorage.removeItem(storageKey); return; }
    const serverSaved = Date.parse(form.dataset.serverSaved || "") || 0;
    // submitted work: only changes made after its last submit (a copy kept while submitting is older)
    if (stored.at <= serverSaved && (!stored.submitting || !serverDrafts)) {
      if (!serverDrafts) localStorage.removeItem(storageKey);
      return;
    }
    const f = stored.fields || {};
    form.querySelectorAll("input[type=radio]").forEach((el) => { if (f[el.name] !== undefined) el.checked = el.value === f[el.name]; });
    form.querySelectorAll("input[type=checkbox][name=categories]").forEach((el) => { el.checked = (f.categories || []).includes(el.value); });
    ["note", "reason", "correction_content", "correction_tool_calls"].forEach((name) => {
      const el = form.querySelector("[name=" + name + "]");
      if (el && typeof f[name] === "string") el.value = f[name];
    });
    setState("restored your unsaved changes from this browser");
    if (serverDrafts) saveNow();
  }
  if (editable) {
    form.addEventListener("input", (e) => { if (e.target !== search) saveSoon(); });
    form.addEventListener("change", (e) => { if (e.target !== search) saveSoon(); });
    restore();
    window.addEventListener("beforeunload", () => { if (timer) { keepLocally(); } });
  } else if (storageKey) {
    try { localStorage.removeItem(storageKey); } catch (e) { /* ignore */ }
  }

  // ---- heartbeat: keep the lock while the page is open ------------------------------------
  if (mode === "editable") {
    setInterval(() => {
      fetch(form.dataset.heartbeatUrl, { method: "POST", body: new FormData(form), credentials: "same-origin" })
        .then((r) => { if (r.status === 409) setState("your lock expired: submit may be refused if someone else took the item"); })
        .catch(() => setState("offline — your changes are kept in this browser"));
    }, 60000);
  }

  // ---- a label that contradicts itself asks first ---------------------------------------------
  let confirmed = false;
  function checkedCategories() {
    return Array.from(form.querySelectorAll("input[name=categories]:checked"));
  }
  function verdict() {
    const v = form.querySelector("input[name=verdict]:checked");
    return v ? v.value : "";
  }
  function contradiction() {
    if (kind !== "label" || !confirmDialog) return null;
    const cats = checkedCategories();
    if (verdict() === "reasonable" && cats.length) return "reasonable";
    if (verdict() === "unreasonable" && !cats.length) return "no-category";
    return null;
  }
  function askFirst(which) {
    confirmDialog.querySelectorAll("[data-case]").forEach((el) => { el.hidden = el.dataset.case !== which; });
    const list = confirmDialog.querySelector(".confirm-list");
    list.textContent = "";
    checkedCategories().forEach((box, i, all) => {
      const strong = document.createElement("strong");
      strong.textContent = box.closest("label").querySelector(".cat-name").textContent.trim();
      list.appendChild(strong);
      if (i < all.length - 1) list.appendChild(document.createTextNode(", "));
    });
    confirmDialog.dataset.showing = which;
    confirmDialog.showModal();
    const first = confirmDialog.querySelector("[data-case=" + which + "] button.primary");
    if (first) first.focus();
  }
  function answer(action) {
    confirmDialog.close();
    if (action === "submit") { confirmed = true; submit(); }
    else if (action === "unreasonable") { check("input[name=verdict][value=unreasonable]"); confirmed = true; submit(); }
    else if (action === "pick" && search) { search.focus(); }
  }
  if (confirmDialog) {
    confirmDialog.addEventListener("click", (e) => {
      const b = e.target.closest("[data-confirm]");
      if (b) answer(b.dataset.confirm);
    });
    confirmDialog.addEventListener("keydown", (e) => {
      const k = e.key.toLowerCase();
      const which = confirmDialog.dataset.showing;
      if (which === "reasonable" && k === "y") { e.preventDefault(); answer("submit"); }
      else if (which === "reasonable" && k === "n") { e.preventDefault(); answer("unreasonable"); }
      else if (which === "no-category" && k === "/") { e.preventDefault(); answer("pick"); }
    });
  }
  form.addEventListener("submit", (e) => {
    flushChord();
    const which = confirmed ? null : contradiction();
    if (which) { e.preventDefault(); askFirst(which); return; }
    confirmed = false;
    timeField.value = spent();
    keepLocally({ submitting: true });
  });

  // ---- keyboard --------------------------------------------------------------------------
  function check(selector) { const el = form.querySelector(selector); if (el && !el.disabled) { el.checked = true; saveSoon(); } }
  function submit() { if (editable) { clearTimeout(timer); form.requestSubmit(); } }
  document.querySelectorAll("[data-help]").forEach((b) => b.addEventListener("click", () => keys.showModal()));
  document.addEventListener("keydown", (e) => {
    const typing = e.target.matches("textarea, input[type=text], input[type=search], input:not([type])");
    if (confirmDialog && confirmDialog.open) return;
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); return; }
    if (e.key === "Escape" && typing) { e.target.blur(); return; }
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    if (keys && keys.open) return;
    const k = e.key.toLowerCase();
    if (!/^[0-9]$/.test(k)) flushChord();
    if (e.key === "?") { e.preventDefault(); keys.showModal(); return; }
    if (k === "m") { e.preventDefault(); toggleEarlier(); return; }
    if (!editable) return;
    if (k === "s") { e.preventDefault(); const skip = document.getElementById("skip-form"); if (skip && document.getElementById("skip-btn")) skip.submit(); return; }
    if (kind === "label") {
      if (k === "y") check("input[name=verdict][value=reasonable]");
      else if (k === "n") check("input[name=verdict][value=unreasonable]");
      else if (/^[0-9]$/.test(k)) { e.preventDefault(); typeDigit(parseInt(k, 10)); }
      else if (k === "/") { e.preventDefault(); search.focus(); }
      else if (k === "c") {
        e.preventDefault();
        const box = document.getElementById("correction-box");
        if (box) box.open = true;
        document.getElementById("correction-calls").focus();
      }
      else if (k === "e") { e.preventDefault(); document.getElementById("note").focus(); }
    } else {
      if (["a", "b", "t", "x"].includes(k)) check("input[name=choice][data-key=" + k + "]");
      else if (k === "r") { e.preventDefault(); document.getElementById("reason").focus(); }
    }
  });

  // ---- compare: the words that differ between the two answers -----------------------------------
  function words(root) {
    const out = [];
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    let node;
    while ((node = walker.nextNode())) {
      const re = /\S+/g;
      let m;
      while ((m = re.exec(node.data))) out.push({ node, start: m.index, end: m.index + m[0].length, word: m[0], differs: true });
    }
    return out;
  }
  const MAX_CELLS = 4000000;
  function markCommon(a, b) {
    // common prefix and suffix first, then a common subsequence of what is left, heaviest by characters
    let lo = 0;
    while (lo < a.length && lo < b.length && a[lo].word === b[lo].word) { a[lo].differs = b[lo].differs = false; lo++; }
    let ea = a.length, eb = b.length;
    while (ea > lo && eb > lo && a[ea - 1].word === b[eb - 1].word) { ea--; eb--; a[ea].differs = b[eb].differs = false; }
    const n = ea - lo, m = eb - lo;
    if (n === 0 || m === 0) return true;
    if (n * m > MAX_CELLS) return false;
    const width = m + 1;
    const table = new Uint32Array((n + 1) * width);
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        // a match weighs its word's length: of two equally long alignments the one keeping the longer
        // words wins ("sorry" over "for"), whichever side each answer was shown on
        table[i * width + j] = a[lo + i].word === b[lo + j].word
          ? table[(i + 1) * width + j + 1] + a[lo + i].word.length
          : Math.max(table[(i + 1) * width + j], table[i * width + j + 1]);
      }
    }
    let i = 0, j = 0;
    while (i < n && j < m) {
      if (a[lo + i].word === b[lo + j].word) { a[lo + i].differs = b[lo + j].differs = false; i++; j++; }
      else if (table[(i + 1) * width + j] >= table[i * width + j + 1]) i++;
      else j++;
    }
    return true;
  }
  function highlight(tokens) {
    // consecutive differing words of one text node become one <mark>; later ranges first, so the
    // offsets of earlier ones stay valid while the node is split
    const ranges = new Map();
    let prev = null;
    tokens.forEach((t) => {
      if (!t.differs) { prev = null; return; }
      const list = ranges.get(t.node) || [];
      if (prev && prev.node === t.node) list[list.length - 1].end = t.end;
      else list.push({ start: t.start, end: t.end });
      ranges.set(t.node, list);
      prev = t;
    });
    let count = 0;
    ranges.forEach((list, node) => {
      for (let k = list.length - 1; k >= 0; k--) {
        const { start, end } = list[k];
        node.splitText(end);
        const middle = node.splitText(start);
        const mark = document.createElement("mark");
        mark.className = "diff";
        middle.parentNode.insertBefore(mark, middle);
        mark.appendChild(middle);
        count++;
      }
    });
    return count;
  }
  function compareTexts() {
    const left = document.querySelector(".under-review[data-side=left]");
    const right = document.querySelector(".under-review[data-side=right]");
    if (!left || !right) return;
    const summary = document.getElementById("diff-summary");
    const a = left.querySelector("[data-diff-text]");
    const b = right.querySelector("[data-diff-text]");
    let note = "";
    if (a && b) {
      const ta = words(a), tb = words(b);
      if (markCommon(ta, tb)) {
        const changed = ta.filter((t) => t.differs).length + tb.filter((t) => t.differs).length;
        highlight(ta);
        highlight(tb);
        note = changed ? changed + " word" + (changed === 1 ? "" : "s") : "same text";
      } else {
        note = "texts too long to compare word by word";
      }
    } else if (a || b) {
      (a || b).classList.add("diff-only");
      note = "only one answer has text";
    }
    const calls = Array.from(document.querySelectorAll(".pair .toolcall"))
      .filter((call) => call.classList.contains("diff-only") || call.querySelector(".diff")).length;
    if (calls) note += (note ? "; " : "") + "tool calls differ";
    if (summary) summary.textContent = note ? "(" + note + ")" : "";
  }
  if (kind === "compare") compareTexts();

  reveal();
})();
