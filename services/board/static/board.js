// Live board: poll the data version every second and reload when it moved, so a new
// event shows within 2 s. Same origin only; nothing is fetched from anywhere else.
// Once the user leaves (a link, a form, the address bar) the poll stops: a reload then
// would cancel the navigation the user asked for and bring back the page they left.
(function () {
  var marker = document.getElementById("live");
  if (!marker) return;
  var seen = null;
  var leaving = false;
  function leave() { leaving = true; }
  window.addEventListener("beforeunload", leave);
  window.addEventListener("pagehide", leave);
  document.addEventListener("submit", leave, true);
  document.addEventListener("click", function (e) {
    var a = e.target && e.target.closest ? e.target.closest("a[href]") : null;
    if (a && !e.defaultPrevented && a.target !== "_blank" && !a.hasAttribute("download")) leave();
  });
  // Back from the browser's page cache: the page is live again.
  window.addEventListener("pageshow", function (e) { if (e.persisted) { leaving = false; seen = null; } });
  function poll() {
    if (leaving) { setTimeout(poll, 1000); return; }
    fetch("/api/version", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (v) {
        if (!v || leaving) return;
        if (seen !== null && v.version !== seen) { location.reload(); return; }
        seen = v.version;
      })
      .catch(function () {})
      .finally(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
