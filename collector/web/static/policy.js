// The policy page's two editors (form, TOML) as tabs; without scripts both forms show, one after the other.
document.addEventListener("DOMContentLoaded", () => {
  const tabs = Array.from(document.querySelectorAll("nav.tabs a[data-editor]"));
  if (!tabs.length) return;
  const show = (id) => {
    for (const tab of tabs) {
      const form = document.getElementById(tab.dataset.editor);
      const on = tab.dataset.editor === id;
      if (form) form.classList.toggle("is-hidden", !on);
      if (on) tab.setAttribute("aria-current", "page"); else tab.removeAttribute("aria-current");
    }
  };
  for (const tab of tabs) {
    tab.addEventListener("click", (event) => { event.preventDefault(); show(tab.dataset.editor); });
  }
  const opened = tabs[0].parentElement.dataset.open || "edit-form";
  show(location.hash === "#edit-toml" ? "edit-toml" : location.hash === "#edit-form" ? "edit-form" : opened);
});
