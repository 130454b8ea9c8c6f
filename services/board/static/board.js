// Live board: poll the data version every second and reload when it moved, so a new
// event shows within 2 s. Same origin only; nothing is fetched from anywhere else.
(function () {
  var marker = document.getElementById("live");
  if (!marker) return;
  var seen = null;
  function poll() {
    fetch("/api/version", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (v) {
        if (!v) return;
        if (seen !== null && v.version !== seen) { location.reload(); return; }
        seen = v.version;
      })
      .catch(function () {})
      .finally(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
