// Shoumi's shared script: no build step, no inline script (the Content-Security-Policy forbids it).
// api(path, body) posts JSON with the session's CSRF token; [data-check-all] ticks a table's boxes;
// forms with data-confirm ask before they submit.
"use strict";
function shoumiCsrf() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}
async function api(path, body, method) {
  const response = await fetch(path, {
    method: method || "POST",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": shoumiCsrf()},
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = {detail: text}; }
  if (!response.ok) { throw new Error((data && data.detail) || response.statusText); }
  return data;
}
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-check-all]").forEach((box) => {
    box.addEventListener("change", () => {
      document.querySelectorAll(box.dataset.checkAll).forEach((b) => { b.checked = box.checked; });
    });
  });
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => { if (!window.confirm(form.dataset.confirm)) event.preventDefault(); });
  });
});
