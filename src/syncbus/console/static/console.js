// syncbus console: enhancement only -- every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Ask before destructive buttons (data-confirm holds the question).
  document.querySelectorAll("[data-confirm]").forEach((button) => {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.getAttribute("data-confirm"))) event.preventDefault();
    });
  });
  // "Select all on this page" for bulk actions (hidden without scripts, where it could not work).
  document.querySelectorAll("input.select-all").forEach((box) => {
    box.hidden = false;
    box.addEventListener("change", () => {
      document.querySelectorAll('input[type="checkbox"][name="id"]').forEach((item) => { item.checked = box.checked; });
    });
  });
});
