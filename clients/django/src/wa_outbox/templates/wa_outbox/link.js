// "Link your WhatsApp": keep the state part of the page current (the QR rotates; a scan
// connects) by polling a small JSON view. No build step, no dependencies.
(function () {
  "use strict";
  var root = document.querySelector("[data-wa-link]");
  if (!root || !window.fetch) return;
  var box = root.querySelector("[data-wa-link-state]");
  var url = root.getAttribute("data-state-url");
  var timer = null;

  function shown() { return box.querySelector("[data-state-key]"); }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, ms);
  }

  function poll() {
    if (document.hidden) return; // resumed by visibilitychange
    fetch(url, { credentials: "same-origin", cache: "no-store",
                 headers: { "Accept": "application/json" } })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (data) {
        var el = shown();
        // Only when something visible changed: never wipe a half-typed phone number.
        if (!el || el.getAttribute("data-state-key") !== data.key) box.innerHTML = data.html;
        schedule(data.pollMs);
      })
      .catch(function () { schedule(5000); });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) schedule(0);
  });
  var first = shown();
  schedule((first && parseInt(first.getAttribute("data-poll-ms"), 10)) || 2000);
})();
