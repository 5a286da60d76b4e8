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
