/* Terapan viewer: shared helpers (config, CSRF-aware JSON API, OpenSeadragon set-up, deep links). */
(function () {
  "use strict";
  const T = (window.Terapan = window.Terapan || {});

  T.config = function () {
    const el = document.getElementById("terapan-config");
    return el ? JSON.parse(el.textContent) : {};
  };

  T.csrf = function () {
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  };

  /* fetch JSON with the session cookie and CSRF header; throws Error(message) on failure. */
  T.api = async function (url, opts) {
    opts = opts || {};
    const init = { method: opts.method || "GET", credentials: "same-origin", headers: { Accept: "application/json" } };
    if (opts.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.body);
    }
    if (init.method !== "GET") init.headers["X-CSRFToken"] = T.csrf();
    const resp = await fetch(url, init);
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      const msg = (data && data.error) || resp.status + " " + resp.statusText;
      const err = new Error(msg);
      err.status = resp.status;
      throw err;
    }
    return data;
  };

  /* Phones: no OpenSeadragon buttons or minimap over the image, so a touch meant
     to draw cannot land on them (pinch zooms, the toolbar has the rest). */
  T.isNarrow = function () {
    return window.matchMedia("(max-width: 700px)").matches;
  };

  T.makeViewer = function (id, cfg, pyramid, extra) {
    const narrow = T.isNarrow();
    const opts = Object.assign(
      {
        id: id,
        prefixUrl: cfg.osdImages,
        tileSources: pyramid.dzi,
        wrapHorizontal: !!cfg.wrap,
        showNavigator: !narrow,
        navigatorPosition: "BOTTOM_RIGHT",
        showNavigationControl: !narrow,
        showFullPageControl: true,
        showRotationControl: false,
        showFlipControl: false,
        maxZoomPixelRatio: 4, // zoom to 400 % of full resolution
        minZoomImageRatio: 0.5,
        visibilityRatio: 1, // never pan the image off the screen
        constrainDuringPan: true,
        animationTime: 0.8,
        springStiffness: 7,
        zoomPerScroll: 1.25,
        immediateRender: false,
        imageLoaderLimit: 8,
        timeout: 30000,
        gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
        gestureSettingsTouch: { pinchRotate: false, flickEnabled: true },
        keyboardNavEnabled: true,
        crossOriginPolicy: false,
      },
      extra || {}
    );
    const viewer = OpenSeadragon(opts);
    // Rotation and flip are off: 'r' and 'f' used to turn the panorama with no way
    // back and no trace in the link. Other keys keep their OpenSeadragon meaning.
    viewer.addHandler("canvas-key", function (e) {
      const k = e.originalEvent && (e.originalEvent.key || "").toLowerCase();
      if (k === "r" || k === "f") e.preventDefaultAction = true;
    });
    if (cfg.wrap) T.keepInFirstTurn(viewer);
    return viewer;
  };

  /* 360 degrees: after a pan past the seam, jump back by whole turns to the same
     view, so the navigator's box (and review shapes) stay on the one image. */
  T.keepInFirstTurn = function (viewer) {
    viewer.addHandler("animation-finish", function () {
      const item = viewer.world.getItemAt(0);
      if (!item) return;
      const width = item.getBounds().width;
      const c = viewer.viewport.getCenter(false);
      const turns = Math.floor(c.x / width);
      if (turns !== 0) viewer.viewport.panTo(new OpenSeadragon.Point(c.x - turns * width, c.y), true);
    });
  };

  /* Zoom as a fraction of full resolution (1 = one image pixel per CSS pixel). */
  T.imageZoom = function (viewer, current) {
    const vp = viewer.viewport;
    return vp.viewportToImageZoom(vp.getZoom(current !== false));
  };

  T.formatZoom = function (z) {
    const pct = z * 100;
    return (pct < 10 ? pct.toFixed(1) : Math.round(pct)) + " %";
  };

  /* The current view as {x, y, z}: centre in image pixels and image zoom. */
  T.readView = function (viewer, width) {
    const vp = viewer.viewport;
    const c = vp.viewportToImageCoordinates(vp.getCenter(true));
    let x = c.x;
    if (width && T._wrap) x = ((x % width) + width) % width; // 360 degrees: one turn is the same view
    return { x: Math.round(x), y: Math.round(c.y), z: Number(T.imageZoom(viewer).toPrecision(4)) };
  };

  /* A view brought inside the image and the zoom limits (hand-edited links). */
  T.clampView = function (viewer, view) {
    const item = viewer.world.getItemAt(0);
    if (!item) return view;
    const size = item.getContentSize();
    const vp = viewer.viewport;
    const zmin = vp.viewportToImageZoom(vp.getMinZoom());
    const zmax = vp.viewportToImageZoom(vp.getMaxZoom());
    let x = view.x;
    if (T._wrap) x = ((x % size.x) + size.x) % size.x;
    else x = Math.min(Math.max(x, 0), size.x);
    return {
      x: x,
      y: Math.min(Math.max(view.y, 0), size.y),
      z: Math.min(Math.max(view.z, zmin), zmax),
    };
  };

  T.applyView = function (viewer, view, immediately) {
    const vp = viewer.viewport;
    if (!isFinite(view.x) || !isFinite(view.y) || !isFinite(view.z) || view.z <= 0) return;
    const v = T.clampView(viewer, view);
    vp.zoomTo(vp.imageToViewportZoom(v.z), null, !!immediately);
    vp.panTo(vp.imageToViewportCoordinates(new OpenSeadragon.Point(v.x, v.y)), !!immediately);
    vp.applyConstraints(!!immediately);
  };

  T.hashParams = function (hash) {
    return new URLSearchParams((hash === undefined ? window.location.hash : hash).replace(/^#/, ""));
  };

  T.parseHash = function (hash) {
    const p = T.hashParams(hash);
    if (!p.has("x") || !p.has("y") || !p.has("z")) return null;
    const v = { x: parseFloat(p.get("x")), y: parseFloat(p.get("y")), z: parseFloat(p.get("z")) };
    return isFinite(v.x) && isFinite(v.y) && isFinite(v.z) && v.z > 0 ? v : null;
  };

  /* Extra link parameters owned by other scripts (review: region=ID). */
  T.hashExtra = {};

  T.formatHash = function (v) {
    let h = "#x=" + v.x + "&y=" + v.y + "&z=" + v.z;
    Object.keys(T.hashExtra).forEach(function (k) {
      if (T.hashExtra[k] !== null && T.hashExtra[k] !== undefined) h += "&" + k + "=" + encodeURIComponent(T.hashExtra[k]);
    });
    return h;
  };
})();
