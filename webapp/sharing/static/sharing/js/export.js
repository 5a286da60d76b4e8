/* Terapan export page: the preview's view (or typed numbers) choose the area to export. */
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("export-config").textContent);
  const $ = (id) => document.getElementById(id);
  const fields = { x: $("ex-x"), y: $("ex-y"), w: $("ex-w"), h: $("ex-h"), width: $("ex-width") };
  let follow = true; // the view drives the fields until the user types a number

  function clampRect(x, y, w, h) {
    x = Math.max(0, Math.min(cfg.width - 1, Math.round(x)));
    y = Math.max(0, Math.min(cfg.height - 1, Math.round(y)));
    w = Math.max(1, Math.min(cfg.width - x, Math.round(w)));
    h = Math.max(1, Math.min(cfg.height - y, Math.round(h)));
    return { x: x, y: y, w: w, h: h };
  }

  function fitWidth(w, h) {
    // Largest output width within the limits, never above the area's own pixels.
    const f = Math.min(1, cfg.maxSide / w, cfg.maxSide / h, Math.sqrt(cfg.maxPixels / (w * h)));
    return Math.max(1, Math.floor(w * f));
  }

  function update() {
    const w = +fields.w.value, h = +fields.h.value, ow = +fields.width.value;
    const err = $("ex-error");
    if (!(w > 0 && h > 0 && ow > 0)) { $("ex-out").textContent = "-"; return; }
    const oh = Math.max(1, Math.round(h * ow / w));
    $("ex-out").textContent = ow + " \u00d7 " + oh + " px (" + (ow * oh / 1e6).toFixed(1) + " MP)";
    let msg = "";
    if (ow > w) msg = "The output cannot be wider than the area (" + w + " px).";
    else if (ow * oh > cfg.maxPixels || ow > cfg.maxSide || oh > cfg.maxSide) msg = "Too large: lower the output width.";
    err.textContent = msg;
    err.hidden = !msg;
    $("ex-submit").disabled = !!msg;
  }

  function setRect(r) {
    fields.x.value = r.x; fields.y.value = r.y; fields.w.value = r.w; fields.h.value = r.h;
    fields.width.value = fitWidth(r.w, r.h);
    update();
  }

  // A frame on the preview shows a typed (or linked) area; the whole view needs none.
  const frame = document.createElement("div");
  frame.className = "export-frame";
  function showFrame() {
    const item = viewer.world.getItemAt(0);
    if (viewer.getOverlayById && viewer.getOverlayById(frame)) viewer.removeOverlay(frame);
    if (follow || !item) return;
    const r = clampRect(+fields.x.value, +fields.y.value, +fields.w.value, +fields.h.value);
    viewer.addOverlay({ element: frame, location: item.imageToViewportRectangle(r.x, r.y, r.w, r.h) });
  }

  const viewer = OpenSeadragon({
    id: "export-osd",
    prefixUrl: cfg.osdImages,
    tileSources: cfg.dzi,
    showNavigator: false,
    showRotationControl: false,
    showFullPageControl: false,
    gestureSettingsTouch: { pinchRotate: false },
  });
  window.terapanExport = viewer;

  function fromView() {
    const item = viewer.world.getItemAt(0);
    if (!item) return;
    const b = item.viewportToImageRectangle(viewer.viewport.getBounds(true));
    const x0 = Math.max(0, b.x), y0 = Math.max(0, b.y);
    const x1 = Math.min(cfg.width, b.x + b.width), y1 = Math.min(cfg.height, b.y + b.height);
    setRect(clampRect(x0, y0, x1 - x0, y1 - y0));
  }

  viewer.addHandler("open", function () {
    const i = cfg.initial || {};
    if (i.w && i.h) {
      follow = false;
      setRect(clampRect(i.x, i.y, i.w, i.h));
      const item = viewer.world.getItemAt(0);
      viewer.viewport.fitBounds(item.imageToViewportRectangle(i.x, i.y, i.w, i.h), true);
      showFrame();
    } else {
      fromView();
    }
  });
  viewer.addHandler("animation-finish", function () { if (follow) fromView(); });
  $("ex-view").addEventListener("click", function () { follow = true; fromView(); showFrame(); });
  for (const k of ["x", "y", "w", "h"]) fields[k].addEventListener("input", function () { follow = false; update(); showFrame(); });
  fields.width.addEventListener("input", update);
  if (cfg.initial && cfg.initial.format) $("ex-format").value = cfg.initial.format;
})();
