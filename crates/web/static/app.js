// envstore's web UI: the one thing that needs JavaScript, following a
// running build live until it ends: its log, its phases and state (the
// page's own parts, fetched again whenever the build moves on), and the
// download's progress in bytes and packages. Every page works without it.
(function () {
  "use strict";

  var SYMBOLS = { queued: "…", running: "▶", succeeded: "✓", failed: "✗", cancelled: "⊘" };

  // The parts of a build's page the server renders anew as the build moves on.
  var PARTS = ["build-facts", "build-actions", "build-waiting", "build-error", "phases", "build-files"];

  var UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

  function humanBytes(bytes) {
    var value = bytes;
    var unit = 0;
    while (value >= 1024 && unit < UNITS.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit === 0 ? String(value) : value.toFixed(1)) + " " + UNITS[unit];
  }

  function showStatus(container, status) {
    var badge = container && container.querySelector(".status");
    if (!badge || !status) {
      return;
    }
    badge.className = "status status-" + status;
    badge.setAttribute("data-status", status);
    badge.querySelector(".symbol").textContent = SYMBOLS[status] || "";
    badge.querySelector(".label").textContent = status;
  }

  // Fetches the page again and swaps in its build parts; `then` runs once
  // they are in (or the fetch failed). Fetches never overlap: a change
  // during one is fetched once it is done.
  function refresher(then) {
    var busy = false;
    var again = false;
    var waiting = [];
    function run() {
      busy = true;
      again = false;
      fetch(window.location.pathname, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("status " + response.status);
          }
          return response.text();
        })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html");
          PARTS.forEach(function (id) {
            var old = document.getElementById(id);
            var now = fresh.getElementById(id);
            if (old && now) {
              old.replaceWith(document.importNode(now, true));
            }
          });
        })
        .catch(function () {})
        .then(function () {
          busy = false;
          if (again) {
            run();
            return;
          }
          var done = waiting;
          waiting = [];
          done.forEach(function (callback) {
            callback();
          });
        });
    }
    return function (callback) {
      if (callback) {
        waiting.push(callback);
      }
      if (busy) {
        again = true;
      } else {
        run();
      }
    };
  }

  function progressShower() {
    var box = document.getElementById("download-progress");
    var bar = document.getElementById("download-bar");
    var text = document.getElementById("download-text");
    var linkText = document.getElementById("link-text");
    var cached = 0;
    var downloaded = 0;
    return {
      reset: function () {
        cached = 0;
        downloaded = 0;
      },
      show: function (event) {
        if (!box) {
          return;
        }
        if (event.kind === "downloading") {
          if (event.cached) {
            cached += 1;
          } else {
            downloaded += 1;
          }
          box.hidden = false;
          var bytesKnown = event.bytes_total > 0;
          bar.max = bytesKnown ? event.bytes_total : Math.max(event.total, 1);
          bar.value = bytesKnown ? event.bytes_done : event.done;
          box.setAttribute("data-bytes-done", String(event.bytes_done));
          box.setAttribute("data-bytes-total", String(event.bytes_total));
          box.setAttribute("data-packages-done", String(event.done));
          box.setAttribute("data-packages-total", String(event.total));
          box.setAttribute("data-cached", String(cached));
          box.setAttribute("data-downloaded", String(downloaded));
          text.textContent =
            (bytesKnown ? humanBytes(event.bytes_done) + " of " + humanBytes(event.bytes_total) + " · " : "") +
            event.done + " of " + event.total + " packages (" +
            cached + " cached, " + downloaded + " downloaded) · last: " + event.package;
        } else if (event.kind === "linking") {
          box.hidden = false;
          linkText.textContent = event.done === 0
            ? "Linking " + event.total + " packages"
            : "Linked " + event.done + " of " + event.total + " packages";
        }
      }
    };
  }

  function followLog(log) {
    var notice = document.getElementById("log-notice");
    var received = 0;
    var refresh = refresher();
    var progress = progressShower();
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
    function restart() {
      log.textContent = "";
      received = 0;
      progress.reset();
    }
    source.addEventListener("open", restart);
    source.addEventListener("reset", restart);
    source.addEventListener("line", function (event) {
      append(event.data);
    });
    source.addEventListener("progress", function (event) {
      var record = JSON.parse(event.data);
      if (record && record.event) {
        progress.show(record.event);
      }
    });
    // The build moved to another phase or state: show it, then the
    // server's rendering of the phases.
    source.addEventListener("status", function (event) {
      var state = JSON.parse(event.data);
      showStatus(document.getElementById("build-status"), state.status);
      var phaseBox = document.getElementById("build-phase");
      if (phaseBox && state.phase) {
        phaseBox.textContent = state.phase + (state.detail ? " (" + state.detail + ")" : "");
      }
      refresh();
    });
    source.addEventListener("end", function (event) {
      var outcome = JSON.parse(event.data);
      source.close();
      showStatus(document.getElementById("build-status"), outcome.status);
      var cancel = document.getElementById("cancel-form");
      if (cancel) {
        cancel.hidden = true;
      }
      // The final state as the server renders it: phases finished or
      // failed, no cancel button, the error, the lockfiles.
      refresh(function () {
        log.removeAttribute("data-events");
        log.setAttribute("data-ended", outcome.status);
        if (notice) {
          notice.textContent = "The build " + outcome.status + ". ";
          var link = document.createElement("a");
          link.href = window.location.pathname;
          link.id = "show-result";
          link.textContent = "Reload the page";
          notice.appendChild(link);
        }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var log = document.getElementById("log");
    if (log && log.hasAttribute("data-events") && window.EventSource) {
      followLog(log);
    }
  });
})();
