// Switchyard console: the few behaviours htmx does not cover. Loaded from
// this host only; the page allows no inline script.
(function () {
  "use strict";

  // htmx requests carry the session's CSRF token in a header.
  document.addEventListener("htmx:configRequest", function (event) {
    var token = document.body && document.body.dataset.csrf;
    if (token) { event.detail.headers["X-CSRF-Token"] = token; }
  });

  // Copy buttons: <button data-copy="#id"> copies that element's text.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) { return; }
    var source = document.querySelector(button.dataset.copy);
    if (!source) { return; }
    var text = source.value || source.textContent;
    var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {
      var area = document.createElement("textarea");
      area.value = text; document.body.appendChild(area); area.select();
      try { document.execCommand("copy"); done(); } finally { area.remove(); }
    }
  });

  // The data picker: "+ data" next to a field opens the list of the
  // trigger's and earlier steps' fields; picking one inserts a reference
  // at the cursor ({{ trigger.x }} in an input, the bare path in a
  // condition's field).
  var target = null;
  document.addEventListener("click", function (event) {
    var open = event.target.closest("[data-picker-for]");
    if (open) {
      target = document.getElementById(open.dataset.pickerFor);
      var scope = open.closest("[data-picker-scope]");
      var picker = scope && scope.querySelector(".picker");
      if (picker) {
        // Shown right under the field it fills.
        var field = open.closest(".cond-row, .field") || open.parentNode;
        if (field.nextSibling !== picker) { field.after(picker); }
        picker.hidden = !(picker.hidden || picker.dataset.for !== open.dataset.pickerFor);
        picker.dataset.for = open.dataset.pickerFor;
        var label = picker.querySelector(".picker-target");
        var named = document.querySelector("label[for='" + open.dataset.pickerFor + "']");
        if (label) {
          label.textContent = named ? named.firstChild.textContent.trim() : (target.getAttribute("aria-label") || open.dataset.pickerFor);
        }
      }
      return;
    }
    var item = event.target.closest("[data-insert]");
    if (!item || !target) { return; }
    var path = item.dataset.insert;
    var text = target.dataset.pickerMode === "path" ? path : "{{ " + path + " }}";
    var start = target.selectionStart, end = target.selectionEnd;
    if (typeof start === "number" && target.dataset.pickerMode !== "path") {
      target.value = target.value.slice(0, start) + text + target.value.slice(end);
      target.selectionStart = target.selectionEnd = start + text.length;
    } else {
      target.value = text;
    }
    target.dispatchEvent(new Event("input", { bubbles: true }));
    target.focus();
    item.closest(".picker").hidden = true;
  });

  // The flow editor saves itself a moment after the last input (htmx).
  // Until the last change is saved the state line says so, and a change
  // still waiting when the page is left (a reload, a link) is sent as the
  // page goes, so leaving never loses it.
  var edits = 0, savedEdits = 0;
  var saveState = function () {
    var line = document.getElementById("save-state");
    if (line && savedEdits < edits) { line.textContent = "Saving…"; }
  };
  document.addEventListener("input", function (event) {
    if (!event.target.closest("form#editor")) { return; }
    edits++;
    saveState();
    // A step's name, as later steps will refer to it.
    var shown = event.target.id && document.querySelector("[data-key-of='" + event.target.id + "']");
    if (shown) { shown.textContent = event.target.value.trim() || "…"; }
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (event.detail.elt.closest && event.detail.elt.closest("form#editor")) {
      event.detail.xhr.editsSent = edits;
    }
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var sent = event.detail.xhr && event.detail.xhr.editsSent;
    if (typeof sent === "number" && event.detail.successful) {
      savedEdits = Math.max(savedEdits, sent);
    }
    saveState();
  });
  document.addEventListener("htmx:afterSettle", saveState);
  window.addEventListener("pagehide", function () {
    var form = document.getElementById("editor");
    if (!form || savedEdits >= edits || !navigator.sendBeacon) { return; }
    navigator.sendBeacon(form.getAttribute("hx-post"), new URLSearchParams(new FormData(form)));
    savedEdits = edits;
  });

  // The connector builder: a problem's line button selects that line of
  // the spec and scrolls to it, the line and column of the cursor are
  // shown above the spec, and Tab indents (YAML has no tabs).
  var specCursor = function () {
    var spec = document.getElementById("spec");
    var shown = document.getElementById("spec-cursor");
    if (!spec || !shown) { return; }
    var before = spec.value.slice(0, spec.selectionStart).split("\n");
    shown.textContent = "Line " + before.length + ", column " + (before[before.length - 1].length + 1);
  };
  ["keyup", "click", "focus"].forEach(function (name) {
    document.addEventListener(name, function (event) {
      if (event.target.id === "spec") { specCursor(); }
    }, true);
  });
  document.addEventListener("click", function (event) {
    var link = event.target.closest("[data-line]");
    var spec = document.getElementById("spec");
    if (!link || !spec) { return; }
    var line = Math.max(1, parseInt(link.dataset.line, 10) || 1);
    var lines = spec.value.split("\n");
    var start = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i++) { start += lines[i].length + 1; }
    spec.focus();
    spec.setSelectionRange(start, start + (lines[line - 1] || "").length);
    var height = parseFloat(getComputedStyle(spec).lineHeight) || 20;
    spec.scrollTop = Math.max(0, (line - 5) * height);
    spec.scrollLeft = 0;
    specCursor();
  });
  document.addEventListener("keydown", function (event) {
    if (event.target.id !== "spec" || event.key !== "Tab" || event.shiftKey || event.ctrlKey || event.altKey || event.metaKey) { return; }
    event.preventDefault();
    // Through the editing commands, so undo and the "input" event work.
    if (!document.execCommand("insertText", false, "  ")) {
      var spec = event.target, at = spec.selectionStart;
      spec.setRangeText("  ", at, spec.selectionEnd, "end");
      spec.dispatchEvent(new Event("input", { bubbles: true }));
    }
  });

  // The builder keeps nothing until a push: leaving with changes asks first.
  var specChanged = false;
  document.addEventListener("input", function (event) {
    if (event.target.id === "spec") { specChanged = true; }
  });
  document.addEventListener("submit", function (event) {
    if (event.target.id === "builder") { specChanged = false; }
  });
  window.addEventListener("beforeunload", function (event) {
    if (specChanged) { event.preventDefault(); event.returnValue = ""; }
  });

  // Confirmation for destructive buttons: <button data-confirm="...">.
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    if (button && button.dataset.confirm && !window.confirm(button.dataset.confirm)) {
      event.preventDefault();
    }
  });

  // "Select all" for bulk actions.
  document.addEventListener("change", function (event) {
    var all = event.target.closest("[data-select-all]");
    if (!all) { return; }
    document.querySelectorAll(all.dataset.selectAll).forEach(function (box) { box.checked = all.checked; });
  });
})();
