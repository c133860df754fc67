// The cases pages: while a hand-off to payroll is pending, look again every few seconds, so the
// bridge's answer (its schedule, or a refusal with its reasons) shows without a manual reload.
// Nothing is reloaded while someone is typing into a form of the page.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  if (!document.querySelector(".handoff-pending")) return;
  let typed = false;
  document.querySelectorAll("form").forEach((f) => f.addEventListener("input", () => { typed = true; }));
  const look = () => {
    const busy = document.activeElement && ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
    if (typed || busy) { window.setTimeout(look, 4000); return; }
    window.location.reload();
  };
  window.setTimeout(look, 4000);
});
