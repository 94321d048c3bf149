// envstore's web UI: the one thing that needs JavaScript, following a
// running build's log live. Every page works without it.
(function () {
  "use strict";

  var SYMBOLS = { queued: "…", running: "▶", succeeded: "✓", failed: "✗", cancelled: "⊘" };

  function showStatus(container, status) {
    var badge = container.querySelector(".status");
    if (!badge || !status) {
      return;
    }
    badge.className = "status status-" + status;
    badge.setAttribute("data-status", status);
    badge.querySelector(".symbol").textContent = SYMBOLS[status] || "";
    badge.querySelector(".label").textContent = status;
  }

  function followLog(log) {
    var statusBox = document.getElementById("build-status");
    var phaseBox = document.getElementById("build-phase");
    var notice = document.getElementById("log-notice");
    var received = 0;
    var source = new EventSource(log.getAttribute("data-events"));

    function append(text) {
      var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.appendChild(document.createTextNode(text + "\n"));
      received += 1;
      log.setAttribute("data-received", String(received));
      if (atBottom) {
        log.scrollTop = log.scrollHeight;
      }
    }

    // Each connection replays the log from its first line.
    source.addEventListener("open", function () {
      log.textContent = "";
    });
    source.addEventListener("reset", function () {
      log.textContent = "";
    });
    source.addEventListener("line", function (event) {
      append(event.data);
    });
    source.addEventListener("status", function (event) {
      var state = JSON.parse(event.data);
      showStatus(statusBox, state.status);
      if (phaseBox && state.phase) {
        phaseBox.textContent = state.phase + (state.detail ? " (" + state.detail + ")" : "");
      }
    });
    source.addEventListener("end", function (event) {
      var outcome = JSON.parse(event.data);
      source.close();
      showStatus(statusBox, outcome.status);
      log.setAttribute("data-ended", outcome.status);
      var cancel = document.getElementById("cancel-form");
      if (cancel) {
        cancel.hidden = true;
      }
      if (notice) {
        notice.textContent = "The build " + outcome.status + ". ";
        var link = document.createElement("a");
        link.href = window.location.pathname;
        link.id = "show-result";
        link.textContent = "Show its result";
        notice.appendChild(link);
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var log = document.getElementById("log");
    if (log && log.hasAttribute("data-events") && window.EventSource) {
      followLog(log);
    }
  });
})();
