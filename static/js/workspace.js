// Annotator workspace: keyboard shortcuts, autosave (server + this browser), lock heartbeat, category filter.
(function () {
  "use strict";
  const form = document.getElementById("task-form");
  if (!form) return;
  const kind = form.dataset.kind;
  const editable = form.dataset.mode === "editable" || form.dataset.mode === "fix";
  const storageKey = form.dataset.storageKey;
  const saveState = document.getElementById("save-state");
  const keys = document.getElementById("keys");
  const started = Date.now();
  const timeField = form.querySelector("input[name=time_spent_ms]");
  const baseTime = parseInt(timeField && timeField.value, 10) || 0;

  function setState(text) { if (saveState) saveState.textContent = text; }
  function spent() { return baseTime + (Date.now() - started); }

  // ---- categories: filter and number the visible leaves 1..9 ------------------------------
  const search = document.getElementById("cat-search");
  const tree = document.getElementById("cat-tree");
  function visibleLeaves() {
    return tree ? Array.from(tree.querySelectorAll("li:not(.group)")).filter((li) => !li.hidden) : [];
  }
  function renumber() {
    if (!tree) return;
    tree.querySelectorAll("kbd.num").forEach((k) => { k.textContent = ""; });
    visibleLeaves().slice(0, 9).forEach((li, i) => { li.querySelector("kbd.num").textContent = String(i + 1); });
  }
  function filterCategories() {
    const q = (search.value || "").trim().toLowerCase();
    const items = Array.from(tree.querySelectorAll("li"));
    items.forEach((li) => { if (!li.classList.contains("group")) li.hidden = q !== "" && !li.dataset.name.includes(q); });
    // a group stays visible when any of the leaves after it (until the next group of its depth) is visible
    items.forEach((li, i) => {
      if (!li.classList.contains("group")) return;
      let any = false;
      for (let j = i + 1; j < items.length && !items[j].classList.contains("group"); j++) any = any || !items[j].hidden;
      li.hidden = q !== "" && !any;
    });
    renumber();
  }
  if (search && tree) { search.addEventListener("input", filterCategories); renumber(); }

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
    if (stored.at <= serverSaved && !stored.submitting) return;
    const f = stored.fields || {};
    form.querySelectorAll("input[type=radio]").forEach((el) => { if (f[el.name] !== undefined) el.checked = el.value === f[el.name]; });
    form.querySelectorAll("input[type=checkbox][name=categories]").forEach((el) => { el.checked = (f.categories || []).includes(el.value); });
    ["note", "reason", "correction_content", "correction_tool_calls"].forEach((name) => {
      const el = form.querySelector("[name=" + name + "]");
      if (el && typeof f[name] === "string") el.value = f[name];
    });
    setState("restored your unsaved changes from this browser");
    saveNow();
  }
  if (editable) {
    form.addEventListener("input", saveSoon);
    form.addEventListener("change", saveSoon);
    form.addEventListener("submit", () => { timeField.value = spent(); keepLocally({ submitting: true }); });
    restore();
    window.addEventListener("beforeunload", () => { if (timer) { keepLocally(); } });
  } else if (storageKey) {
    try { localStorage.removeItem(storageKey); } catch (e) { /* ignore */ }
  }

  // ---- heartbeat: keep the lock while the page is open ------------------------------------
  if (form.dataset.mode === "editable") {
    setInterval(() => {
      fetch(form.dataset.heartbeatUrl, { method: "POST", body: new FormData(form), credentials: "same-origin" })
        .then((r) => { if (r.status === 409) setState("your lock expired: submit may be refused if someone else took the item"); })
        .catch(() => setState("offline — your changes are kept in this browser"));
    }, 60000);
  }

  // ---- keyboard --------------------------------------------------------------------------
  function check(selector) { const el = form.querySelector(selector); if (el && !el.disabled) { el.checked = true; saveSoon(); } }
  function submit() { if (editable) { clearTimeout(timer); form.requestSubmit(); } }
  document.querySelectorAll("[data-help]").forEach((b) => b.addEventListener("click", () => keys.showModal()));
  document.addEventListener("keydown", (e) => {
    const typing = e.target.matches("textarea, input[type=text], input[type=search], input:not([type])");
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); return; }
    if (e.key === "Escape" && typing) { e.target.blur(); return; }
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    if (keys && keys.open) return;
    const k = e.key.toLowerCase();
    if (e.key === "?") { e.preventDefault(); keys.showModal(); return; }
    if (!editable) return;
    if (k === "s") { e.preventDefault(); const skip = document.getElementById("skip-form"); if (skip && document.getElementById("skip-btn")) skip.submit(); return; }
    if (kind === "label") {
      if (k === "y") check("input[name=verdict][value=reasonable]");
      else if (k === "n") check("input[name=verdict][value=unreasonable]");
      else if (/^[1-9]$/.test(k)) {
        const li = visibleLeaves()[parseInt(k, 10) - 1];
        if (li) { const box = li.querySelector("input[type=checkbox]"); box.checked = !box.checked; saveSoon(); }
      } else if (k === "/") { e.preventDefault(); search.focus(); }
      else if (k === "c") { e.preventDefault(); document.getElementById("correction-calls").focus(); }
      else if (k === "e") { e.preventDefault(); document.getElementById("note").focus(); }
    } else {
      if (["a", "b", "t", "x"].includes(k)) check("input[name=choice][data-key=" + k + "]");
      else if (k === "r") { e.preventDefault(); document.getElementById("reason").focus(); }
    }
  });
})();
