// Task page: show the next fire times of the schedule typed into the form, before it is saved.
"use strict";
(function () {
  const FIELDS = ["schedule_type_override", "cron_expression_override", "interval_seconds_override", "timezone_override"];

  function init() {
    const box = document.getElementById("schedule-preview");
    const inputs = FIELDS.map((name) => document.getElementById("id_" + name)).filter(Boolean);
    if (!box || !inputs.length) return;
    const title = box.querySelector(".sched-preview-title");
    const body = box.querySelector(".sched-preview-body");
    const saved = { title: title.innerHTML, body: body.innerHTML };
    let timer = null;
    let latest = 0;

    async function refresh() {
      const params = new URLSearchParams();
      inputs.forEach((input) => params.set(input.name, input.value));
      const ticket = ++latest;
      let answer;
      try {
        const response = await fetch(box.dataset.url + "?" + params.toString(), { credentials: "same-origin" });
        answer = await response.json();
      } catch (error) {
        return; // the saved schedule's preview stays
      }
      if (ticket !== latest) return;
      box.classList.add("sched-draft");
      if (answer.valid) {
        title.textContent = "Preview of the entered schedule (not saved yet)";
        body.innerHTML = answer.html;
      } else {
        title.textContent = "The entered schedule is not valid";
        const list = document.createElement("ul");
        list.className = "errorlist";
        Object.values(answer.errors || {}).forEach((message) => {
          const item = document.createElement("li");
          item.textContent = message;
          list.appendChild(item);
        });
        body.replaceChildren(list);
      }
    }

    function schedule() {
      const unchanged = inputs.every((input) => input.value === input.defaultValue ||
        (input.tagName === "SELECT" && input.selectedOptions[0] && input.selectedOptions[0].defaultSelected));
      if (unchanged) {
        box.classList.remove("sched-draft");
        title.innerHTML = saved.title;
        body.innerHTML = saved.body;
        latest++;
        return;
      }
      clearTimeout(timer);
      timer = setTimeout(refresh, 250);
    }

    inputs.forEach((input) => {
      input.addEventListener("input", schedule);
      input.addEventListener("change", schedule);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
