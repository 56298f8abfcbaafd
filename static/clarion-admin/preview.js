// Live recipient count for the compose page and the audience form: asks the admin's preview
// endpoint (a read-only GET) whenever the audience fields change, debounced.
(function () {
  "use strict";
  var DEBOUNCE_MS = 300;

  function ready(fn) {
    if (document.readyState !== "loading") fn(); else document.addEventListener("DOMContentLoaded", fn);
  }

  ready(function () {
    var preview = document.getElementById("clarion-preview");
    if (!preview) return;
    var form = preview.closest("form");
    var countEl = document.getElementById("clarion-preview-count");
    var noteEl = document.getElementById("clarion-preview-note");
    var timer = null;
    var latest = 0;

    function showTargetFields() {
      var checked = form.querySelector('input[name="send_to"]:checked');
      if (!checked) return;
      form.querySelectorAll(".clarion-target").forEach(function (el) {
        el.hidden = el.getAttribute("data-send-to") !== checked.value;
      });
      var audience = form.querySelector('select[name="audience"]');
      form.querySelectorAll(".clarion-audiences li").forEach(function (li) {
        li.classList.toggle("active", !!audience && li.getAttribute("data-audience") === audience.value);
      });
    }

    function query() {
      var params = new URLSearchParams();
      new FormData(form).forEach(function (value, name) {
        if (name !== "csrfmiddlewaretoken" && typeof value === "string") params.append(name, value);
      });
      return params.toString();
    }

    function refresh() {
      var ticket = ++latest;
      countEl.textContent = "…";
      fetch(preview.getAttribute("data-url") + "?" + query(), {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (response) { return response.json(); })
        .then(function (body) {
          if (ticket !== latest) return;  // an older answer arriving late
          countEl.textContent = body.recipients === null ? "–" : body.recipients.toLocaleString();
          noteEl.textContent = body.message || "";
          preview.setAttribute("data-ready", "1");
        })
        .catch(function () { if (ticket === latest) { countEl.textContent = "?"; } });
    }

    function schedule() {
      showTargetFields();
      clearTimeout(timer);
      timer = setTimeout(refresh, DEBOUNCE_MS);
    }

    form.addEventListener("input", schedule);
    form.addEventListener("change", schedule);
    showTargetFields();
    refresh();
  });
})();
