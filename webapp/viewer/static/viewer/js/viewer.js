/* Terapan viewer page: OpenSeadragon, zoom readout, deep links, work-in-progress layer. */
(function () {
  "use strict";
  const T = window.Terapan;
  const cfg = T.config();
  if (!cfg.pyramid) return;
  const pyr = cfg.pyramid;
  T._wrap = !!cfg.wrap;

  const viewer = T.makeViewer("osd", cfg, pyr);
  T.viewer = viewer;
  window.terapan = { viewer: viewer, config: cfg };

  // Zoom readout (percent of full resolution).
  const readout = document.getElementById("zoom-readout");
  function updateReadout() {
    if (readout && viewer.world.getItemCount()) readout.textContent = T.formatZoom(T.imageZoom(viewer));
  }
  viewer.addHandler("animation", updateReadout);
  viewer.addHandler("zoom", updateReadout);

  // Deep links: #x=..&y=..&z=.. (centre in image pixels, zoom as a fraction of full resolution).
  let applying = false;
  function writeHash() {
    if (applying || !viewer.world.getItemCount()) return;
    const v = T.readView(viewer, pyr.width);
    const h = T.formatHash(v);
    if (window.location.hash !== h) history.replaceState(null, "", window.location.pathname + window.location.search + h);
  }
  function applyHash(immediately) {
    const v = T.parseHash();
    if (!v) return false;
    applying = true;
    T.applyView(viewer, v, immediately);
    applying = false;
    return true;
  }
  viewer.addHandler("open", function () {
    applyHash(true);
    updateReadout();
    document.body.dataset.osdOpen = "1";
  });
  viewer.addHandler("animation-finish", writeHash);
  window.addEventListener("hashchange", function () { applyHash(false); });

  const share = document.getElementById("share-link");
  if (share) {
    share.addEventListener("click", function () {
      writeHash();
      const url = window.location.href;
      if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(url).catch(function () {});
      share.textContent = "Link copied";
      share.title = url;
      setTimeout(function () { share.textContent = "Link to this view"; }, 1500);
    });
  }

  const vsel = document.getElementById("version-select");
  if (vsel) {
    vsel.addEventListener("change", function () {
      window.location.search = "?v=" + encodeURIComponent(vsel.value);
    });
  }

  // Work in progress: stack footprints coloured by status, polled while shown.
  const wipToggle = document.getElementById("wip-toggle");
  const legend = document.getElementById("wip-legend");
  const summary = document.getElementById("wip-summary");
  const overlays = new Map();
  let timer = null;

  function renderStacks(data) {
    const seen = new Set();
    data.items.forEach(function (s) {
      if (!s.footprint) return;
      seen.add(s.id);
      let el = overlays.get(s.id);
      const rect = viewer.viewport.imageToViewportRectangle(s.footprint.x, s.footprint.y, s.footprint.w, s.footprint.h);
      if (!el) {
        el = document.createElement("div");
        el.className = "wip";
        el.appendChild(document.createElement("span"));
        overlays.set(s.id, el);
        viewer.addOverlay({ element: el, location: rect });
      } else {
        viewer.updateOverlay(el, rect);
      }
      el.className = "wip st-" + s.status;
      el.title = s.name + ": " + s.status + (s.status === "running" ? " " + Math.round(s.progress) + " %" : "") + (s.error ? " - " + s.error : "");
      el.firstChild.textContent = s.status === "running" ? Math.round(s.progress) + " %" : s.status;
      el.style.setProperty("--progress", (s.status === "done" ? 100 : s.progress) + "%");
    });
    overlays.forEach(function (el, id) {
      if (!seen.has(id)) { viewer.removeOverlay(el); overlays.delete(id); }
    });
    if (summary) {
      summary.textContent = Object.keys(data.counts).map(function (k) { return data.counts[k] + " " + k; }).join(", ") || "no stacks";
    }
  }
  async function poll() {
    try {
      renderStacks(await T.api(cfg.api.stacks));
    } catch (e) {
      if (summary) summary.textContent = "stacks: " + e.message;
    }
  }
  function setWip(on) {
    if (legend) legend.hidden = !on;
    if (timer) { clearInterval(timer); timer = null; }
    if (on) {
      poll();
      timer = setInterval(poll, 4000);
    } else {
      overlays.forEach(function (el) { viewer.removeOverlay(el); });
      overlays.clear();
    }
  }
  if (wipToggle && cfg.api) {
    wipToggle.addEventListener("change", function () { setWip(wipToggle.checked); });
    document.addEventListener("visibilitychange", function () {
      if (wipToggle.checked) setWip(!document.hidden);
    });
  }
})();
