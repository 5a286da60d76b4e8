/* Compare two pyramid versions: synchronised side-by-side viewers, or a curtain. */
(function () {
  "use strict";
  const T = window.Terapan;
  const cfg = T.config();
  T._wrap = !!cfg.wrap;
  const box = document.getElementById("compare");
  const a = T.makeViewer("osd-a", cfg, cfg.a);
  const b = T.makeViewer("osd-b", cfg, cfg.b, { showNavigator: false });
  window.terapan = { a: a, b: b, config: cfg };
  const readout = document.getElementById("zoom-readout");

  // Mirror one viewer's viewport onto the other (guarded against ping-pong).
  let leader = null;
  function sync(from, to) {
    return function () {
      if (leader && leader !== from) return;
      leader = from;
      to.viewport.zoomTo(from.viewport.getZoom(), null, true);
      to.viewport.panTo(from.viewport.getCenter(), true);
      if (readout && from.world.getItemCount()) readout.textContent = T.formatZoom(T.imageZoom(from));
      leader = null;
    };
  }
  a.addHandler("viewport-change", sync(a, b));
  b.addHandler("viewport-change", sync(b, a));

  // The link's view (#x=..&y=..&z=.., clamped) once both are open; the link follows the view.
  let opened = 0;
  function onOpen() {
    if (++opened < 2) return;
    const v = T.parseHash();
    if (v) T.applyView(a, v, true);
    sync(a, b)();
    if (readout) readout.textContent = T.formatZoom(T.imageZoom(a));
    document.body.dataset.osdOpen = "1";
  }
  a.addHandler("open", onOpen);
  b.addHandler("open", onOpen);
  a.addHandler("animation-finish", function () {
    if (opened < 2) return;
    const h = T.formatHash(T.readView(a, cfg.a.width));
    if (window.location.hash !== h) history.replaceState(null, "", window.location.pathname + window.location.search + h);
  });
  window.addEventListener("hashchange", function () {
    const v = T.parseHash();
    if (v) T.applyView(a, v, false);
  });
  // Changing the versions keeps the view.
  const pick = document.querySelector(".toolbar form");
  if (pick) pick.addEventListener("submit", function (e) {
    e.preventDefault();
    window.location.href = "?" + new URLSearchParams(new FormData(pick)).toString() + window.location.hash;
  });

  const slider = document.getElementById("curtain");
  function clip() {
    const pct = slider.value + "%";
    document.querySelector(".pane-b").style.clipPath = box.classList.contains("curtain") ? "inset(0 0 0 " + pct + ")" : "";
  }
  slider.addEventListener("input", clip);
  document.querySelectorAll("input[name=mode]").forEach(function (r) {
    r.addEventListener("change", function () {
      box.classList.toggle("curtain", r.value === "curtain" && r.checked);
      box.classList.toggle("side", !(r.value === "curtain" && r.checked));
      clip();
      // Both viewers changed size: re-sync from A.
      setTimeout(function () { a.viewport.resize && a.forceRedraw(); sync(a, b)(); }, 50);
    });
  });
})();
