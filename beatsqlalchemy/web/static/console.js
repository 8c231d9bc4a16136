// beatsqlalchemy web console: the schedule kind picker, the live crontab preview and the
// bulk selection. Served from the package (the pages allow no inline script).
"use strict";

function showKind(form) {
  const checked = form.querySelector("input[name=kind]:checked");
  const kind = checked ? checked.value : "interval";
  form.querySelectorAll("fieldset[data-kind]").forEach((set) => {
    set.hidden = set.dataset.kind !== kind;
  });
}

function cronPreview(form) {
  const box = form.querySelector("[data-cron-preview]");
  const cron = form.querySelector("input[name=cron]");
  const zone = form.querySelector("input[name=timezone]");
  if (!box || !cron || !zone) return;
  const words = box.querySelector("[data-words]");
  const runs = box.querySelector("[data-runs]");
  let timer = null;
  let asked = 0;
  const refresh = async () => {
    const ask = ++asked;
    const url = new URL(box.dataset.url, window.location.href);
    url.searchParams.set("cron", cron.value);
    url.searchParams.set("timezone", zone.value);
    try {
      const answer = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      const data = await answer.json();
      if (ask !== asked) return;
      runs.replaceChildren();
      const errors = Object.values(data.errors || {});
      if (errors.length) {
        words.textContent = errors.join(" ");
        words.classList.add("bad");
        return;
      }
      words.classList.remove("bad");
      words.textContent = data.words;
      for (const run of data.runs) {
        const item = document.createElement("li");
        item.textContent = run.local === run.utc ? run.utc : `${run.utc}  ·  ${run.local}`;
        runs.appendChild(item);
      }
    } catch (error) {
      words.textContent = "Preview unavailable.";
    }
  };
  const later = () => { clearTimeout(timer); timer = setTimeout(refresh, 200); };
  cron.addEventListener("input", later);
  zone.addEventListener("input", later);
  refresh();
}

function bulkSelection() {
  const all = document.querySelector("[data-select-all]");
  const count = document.querySelector("[data-selected]");
  const boxes = () => document.querySelectorAll("input[name=names][form=bulk]");
  const update = () => {
    if (count) count.textContent = Array.from(boxes()).filter((b) => b.checked).length;
  };
  if (all) all.addEventListener("change", () => { boxes().forEach((b) => { b.checked = all.checked; }); update(); });
  boxes().forEach((b) => b.addEventListener("change", update));
  update();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("form.task-form").forEach((form) => {
    form.querySelectorAll("input[name=kind]").forEach((radio) => radio.addEventListener("change", () => showKind(form)));
    showKind(form);
    cronPreview(form);
  });
  bulkSelection();
});
