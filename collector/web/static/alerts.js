// The alert pages: show the closure reason and suppression fields only when they apply.
// Plain forms work without this script; it only hides what does not apply to the chosen action.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const action = document.querySelector("select[data-shows-close]");
  if (action) {
    const sync = () => {
      document.querySelectorAll(".when-close").forEach((el) => el.classList.toggle("hidden", action.value !== "close"));
      document.querySelectorAll(".when-assign").forEach((el) => el.classList.toggle("hidden", action.value !== "assign"));
    };
    action.addEventListener("change", sync);
    sync();
  }
  const outcome = document.querySelector(".close-form select[name=outcome]");
  const fp = document.querySelector(".close-form .when-fp");
  if (outcome && fp) {
    const sync = () => fp.classList.toggle("hidden", outcome.value !== "false_positive");
    outcome.addEventListener("change", sync);
    sync();
  }
});
