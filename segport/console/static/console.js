// segport console: small progressive enhancements. Every page works without this file.

// Property picker: filter the keys by name, count the ticked ones against the export cap.
function picker(form) {
  const cap = Number(form.dataset.cap || "60");
  const boxes = Array.from(form.querySelectorAll('input[type="checkbox"][name="p"]'));
  const count = form.querySelector("[data-count]");
  const filter = form.querySelector("[data-filter]");
  const update = () => {
    const n = boxes.filter((b) => b.checked).length;
    if (count) {
      count.textContent = String(n);
      count.parentElement.classList.toggle("over", n > cap);
    }
  };
  boxes.forEach((b) => b.addEventListener("change", update));
  if (filter) {
    filter.addEventListener("input", () => {
      const needle = filter.value.trim().toLowerCase();
      form.querySelectorAll("[data-pick]").forEach((row) => {
        row.hidden = needle !== "" && !row.dataset.text.includes(needle);
      });
    });
    // Enter in the filter box filters; it must not submit the export
    filter.addEventListener("keydown", (e) => {
      if (e.key === "Enter") e.preventDefault();
    });
  }
  update();
}

// Job page: poll the job until it is final, then reload to show the files (or the error).
function job(dl) {
  if (dl.dataset.final === "true") return;
  const url = dl.dataset.statusUrl;
  const stageCode = dl.querySelector('[data-field="stage-code"]');
  const elapsed = dl.querySelector('[data-field="elapsed"]');
  let last = stageCode ? stageCode.textContent : "";
  const tick = async () => {
    let body;
    try {
      const res = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!res.ok) return; // signed out or expired: the next full page load says why
      body = await res.json();
    } catch (e) {
      setTimeout(tick, 2000);
      return;
    }
    if (elapsed && body.elapsed) elapsed.textContent = body.elapsed;
    if (body.stage !== last) {
      last = body.stage;
      window.location.reload();
      return;
    }
    setTimeout(tick, 700);
  };
  setTimeout(tick, 300);
}

const form = document.getElementById("export-form");
if (form) picker(form);
const dl = document.getElementById("job");
if (dl) job(dl);
