// Drag and drop onto the upload zone; the form still works without JavaScript.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  var zone = document.getElementById("drop-zone");
  var input = document.getElementById("file-input");
  var text = document.getElementById("drop-text");
  var button = document.getElementById("submit-button");
  var busy = document.getElementById("busy");
  if (!form || !zone || !input) { return; }

  function showChosen() {
    if (input.files && input.files.length) { text.textContent = "Selected: " + input.files[0].name; }
  }
  input.addEventListener("change", showChosen);

  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) {
      event.preventDefault();
      zone.classList.add("dragover");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function (event) {
      event.preventDefault();
      zone.classList.remove("dragover");
    });
  });
  zone.addEventListener("drop", function (event) {
    var files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) { return; }
    input.files = files;
    showChosen();
    form.requestSubmit ? form.requestSubmit() : form.submit();
  });

  document.querySelectorAll("form").forEach(function (each) {
    each.addEventListener("submit", function () {
      document.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
      if (busy) { busy.hidden = false; }
    });
  });
})();
