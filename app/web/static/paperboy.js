// Enhancements only: every form works without this file.
(function () {
  "use strict";
  var zone = "";
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (error) { zone = ""; }
  document.querySelectorAll("[data-detect-timezone]").forEach(function (field) {
    if (zone && (!field.value || field.value === "UTC")) { field.value = zone; }
  });
  document.querySelectorAll("input[data-shows-value]").forEach(function (slider) {
    var shown = document.getElementById(slider.getAttribute("data-shows-value"));
    if (!shown) { return; }
    slider.addEventListener("input", function () { shown.value = Number(slider.value).toFixed(2); });
  });
  document.querySelectorAll(".chip[data-topic]").forEach(function (chip) {
    chip.addEventListener("click", function () {
      var area = chip.closest("form").querySelector("textarea[name=topics]");
      if (!area) { return; }
      var topics = area.value.split("\n").map(function (t) { return t.trim(); }).filter(Boolean);
      var topic = chip.getAttribute("data-topic");
      if (topics.indexOf(topic) === -1) { topics.push(topic); }
      area.value = topics.join("\n");
      chip.disabled = true;
    });
  });
})();
