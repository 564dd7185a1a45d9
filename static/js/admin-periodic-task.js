// The periodic task form in the admin (templates/admin/triggers/periodictask/change_form.html):
// under the crontab field, say in words what the chosen crontab means, as django-celery-beat's own
// inline script did (inline scripts are refused by the Content-Security-Policy).
"use strict";
(function () {
  function start() {
    var data = document.getElementById("readable-crontabs");
    var select = document.getElementById("id_crontab");
    var translation = document.querySelector(".field-crontab_translation");
    if (translation) translation.hidden = true;
    if (!data || !select) return;
    var readable = JSON.parse(data.textContent);
    var line = document.createElement("div");
    line.className = "help crontab-in-words";
    line.setAttribute("aria-live", "polite");
    var row = select.closest(".field-crontab") || select.parentNode;
    (row.firstElementChild || row).appendChild(line);
    function show() {
      var words = readable[select.value];
      line.textContent = words ? "Translation: " + words : "";
    }
    select.addEventListener("change", show);
    show();
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
