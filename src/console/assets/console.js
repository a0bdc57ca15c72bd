// samgate console: small behaviours without inline script (CSP default-src 'self').
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-print]").forEach(function (b) {
    b.addEventListener("click", function () { window.print(); });
  });
  var errors = document.getElementById("form-errors");
  if (errors) { errors.setAttribute("tabindex", "-1"); errors.focus(); }
});
