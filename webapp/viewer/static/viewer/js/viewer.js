/* Terapan viewer page: OpenSeadragon, zoom readout, deep links, start view, help, work-in-progress layer. */
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

  // Readout and link button live inside the viewer, so they stay in full screen.
  const hud = document.getElementById("hud");
  if (hud) viewer.addControl(hud, { anchor: OpenSeadragon.ControlAnchor.TOP_RIGHT, autoFade: false });

  // Zoom readout (percent of full resolution).
  const readout = document.getElementById("zoom-readout");
  function updateReadout() {
    if (readout && viewer.world.getItemCount()) readout.textContent = T.formatZoom(T.imageZoom(viewer));
  }
  viewer.addHandler("animation", updateReadout);
  viewer.addHandler("zoom", updateReadout);

  // Deep links: #x=..&y=..&z=.. (centre in image pixels, zoom as a fraction of full
  // resolution), clamped to the image; review adds region=ID.
  let applying = false;
  function writeHash() {
    if (applying || !viewer.world.getItemCount()) return;
    const h = T.formatHash(T.readView(viewer, pyr.width));
    if (window.location.hash !== h) history.replaceState(null, "", window.location.pathname + window.location.search + h);
  }
  T.writeHash = writeHash;
  function applyHash(immediately) {
    const v = T.parseHash();
    if (!v) return false;
    applying = true;
    T.applyView(viewer, v, immediately);
    applying = false;
    return true;
  }
  viewer.addHandler("open", function () {
    const linked = applyHash(true);
    const p = T.hashParams();
    updateReadout();
    document.body.dataset.osdOpen = "1";
    if (!linked && !p.has("region") && !p.has("comment")) startView();
    else document.body.dataset.startView = "link";
  });
  viewer.addHandler("animation-finish", writeHash);
  window.addEventListener("hashchange", function () { applyHash(false); });

  /* Start view: fill the screen with the panorama's most detailed band (found on
     the overview the browser already drew), then show the title. */
  function startView() {
    const item = viewer.world.getItemAt(0);
    let tries = 0;
    (function wait() {
      if (!item.getFullyLoaded() && tries++ < 40) return void setTimeout(wait, 100);
      const band = T.interestingBand(viewer, item, !!cfg.wrap);
      if (band) viewer.viewport.fitBounds(viewer.viewport.imageToViewportRectangle(band.x, band.y, band.w, band.h), true);
      document.body.dataset.startView = band ? "band" : "home";
      writeHash();
      showTitle();
    })();
  }

  function showTitle() {
    const el = document.getElementById("start-title");
    if (!el) return;
    el.hidden = false;
    setTimeout(function () { el.classList.add("fade"); }, 3500);
    setTimeout(function () { el.hidden = true; }, 5000);
  }

  /* The window of the image, at the viewer's aspect ratio, whose overview shows
     the most edges (sum of absolute neighbour differences along the long axis). */
  T.interestingBand = function (viewer, item, wrap) {
    const size = item.getContentSize();
    const vsize = viewer.viewport.getContainerSize();
    if (!vsize.x || !vsize.y) return null;
    const horizontal = size.x / size.y > vsize.x / vsize.y; // wide: slide a window along x
    const win = horizontal ? (size.y * vsize.x) / vsize.y : (size.x * vsize.y) / vsize.x;
    const length = horizontal ? size.x : size.y;
    if (win >= length * 0.98) return null;
    const canvas = viewer.drawer && viewer.drawer.canvas;
    if (!canvas || !canvas.getContext) return null;
    const ratio = canvas.width / vsize.x;
    const tl = viewer.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
    const br = viewer.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(size.x, size.y));
    const x0 = Math.max(0, Math.floor(tl.x * ratio)), y0 = Math.max(0, Math.floor(tl.y * ratio));
    const x1 = Math.min(canvas.width, Math.ceil(br.x * ratio)), y1 = Math.min(canvas.height, Math.ceil(br.y * ratio));
    if (x1 - x0 < 8 || y1 - y0 < 8) return null;
    let data;
    try {
      data = canvas.getContext("2d").getImageData(x0, y0, x1 - x0, y1 - y0).data;
    } catch (e) {
      return null;
    }
    const w = x1 - x0, h = y1 - y0;
    const n = horizontal ? w : h;
    const energy = new Float64Array(n);
    const lum = function (i) { return data[i] + 2 * data[i + 1] + data[i + 2]; };
    for (let y = 0; y < h - 1; y++) {
      for (let x = 0; x < w - 1; x++) {
        const i = 4 * (y * w + x);
        const e = Math.abs(lum(i) - lum(i + 4)) + Math.abs(lum(i) - lum(i + 4 * w));
        energy[horizontal ? x : y] += e;
      }
    }
    const k = Math.max(1, Math.round((win / length) * n));
    const circular = wrap && horizontal;
    let best = -1, bestAt = 0, sum = 0;
    for (let i = 0; i < k; i++) sum += energy[i];
    const last = circular ? n : n - k + 1;
    for (let s = 0; s < last; s++) {
      if (sum > best) { best = sum; bestAt = s; }
      sum += energy[(s + k) % n] - energy[s];
    }
    const start = (bestAt / n) * length;
    return horizontal ? { x: start, y: 0, w: win, h: size.y } : { x: 0, y: start, w: size.x, h: win };
  };

  // Help overlay: shown once, dismissed for good (this browser), reopened with "?".
  const help = document.getElementById("help");
  const HELP_KEY = "terapan.help.dismissed";
  function setHelp(open) {
    if (!help) return;
    help.hidden = !open;
    if (!open) {
      try { window.localStorage.setItem(HELP_KEY, "1"); } catch (e) { /* private mode */ }
    }
  }
  if (help) {
    let dismissed = false;
    try { dismissed = window.localStorage.getItem(HELP_KEY) === "1"; } catch (e) { dismissed = false; }
    help.hidden = dismissed;
    help.querySelectorAll("[data-close]").forEach(function (b) { b.addEventListener("click", function () { setHelp(false); }); });
    const open = document.getElementById("help-button");
    if (open) open.addEventListener("click", function () { setHelp(help.hidden); });
    document.addEventListener("keydown", function (e) { if (e.key === "Escape" && !help.hidden) setHelp(false); });
  }

  const share = document.getElementById("share-link");
  if (share) {
    const label = share.textContent;
    share.addEventListener("click", function () {
      writeHash();
      const url = window.location.href;
      if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(url).catch(function () {});
      share.textContent = "Link copied";
      share.title = url;
      setTimeout(function () { share.textContent = label; }, 1500);
    });
  }

  const vsel = document.getElementById("version-select");
  if (vsel) {
    vsel.addEventListener("change", function () {
      window.location.search = "?v=" + encodeURIComponent(vsel.value);
    });
  }
  // The compare link carries the current view.
  const compareLink = document.getElementById("compare-link");
  if (compareLink) {
    compareLink.addEventListener("click", function () {
      writeHash();
      const v = T.parseHash();
      if (v) compareLink.href = compareLink.href.split("#")[0] + "#x=" + v.x + "&y=" + v.y + "&z=" + v.z;
    });
  }

  /* A newly published version: a note with a link to it. Members learn it from
     the review poll (review.js); everyone else polls the small published URL. */
  let seenPublished = cfg.publishedId;
  T.showPublished = function (pub) {
    const el = document.getElementById("published");
    if (!el || !pub || pub.id === seenPublished) return;
    seenPublished = pub.id;
    if (pub.id === pyr.id) { el.hidden = true; return; }
    el.replaceChildren(document.createTextNode("Version " + pub.version + " was published. "));
    const a = document.createElement("a");
    a.textContent = "Open v" + pub.version;
    a.href = window.location.pathname + "?v=" + pub.version + window.location.hash;
    a.addEventListener("click", function () { a.href = window.location.pathname + "?v=" + pub.version + window.location.hash; });
    const close = document.createElement("button");
    close.type = "button";
    close.className = "link";
    close.textContent = "\u00d7";
    close.setAttribute("aria-label", "dismiss");
    close.addEventListener("click", function () { el.hidden = true; });
    el.append(a, close);
    el.hidden = false;
  };
  /* Visitors who are not members may only see the published version: when it
     changes, the viewer switches to it in place, keeping the view. */
  function switchTo(pub) {
    if (!pub || pub.id === pyr.id) return;
    writeHash();
    Object.assign(pyr, pub);
    seenPublished = pub.id;
    viewer.open(pub.dzi);
    const el = document.getElementById("published");
    if (el) {
      el.replaceChildren(document.createTextNode("Now showing version " + pub.version + ", just published."));
      el.hidden = false;
      setTimeout(function () { el.hidden = true; }, 6000);
    }
    document.body.dataset.version = String(pub.version);
  }
  if (!cfg.member && cfg.published) {
    const PUBLISHED_POLL_MS = 5000;
    (function pollPublished() {
      setTimeout(async function () {
        if (!document.hidden) {
          try { switchTo((await T.api(cfg.published)).published); } catch (e) { /* next time */ }
        }
        pollPublished();
      }, PUBLISHED_POLL_MS);
    })();
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
