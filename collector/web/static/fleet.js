// The fleet pages: copy a new enrollment token to the clipboard (the page works without this script).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button.copy[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      if (!source || !navigator.clipboard) return;
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
        button.classList.add("done");
      } catch (err) {
        button.classList.remove("done");
      }
    });
  }
});
