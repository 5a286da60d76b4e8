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

  T.makeViewer = function (id, cfg, pyramid, extra) {
    const opts = Object.assign(
      {
        id: id,
        prefixUrl: cfg.osdImages,
        tileSources: pyramid.dzi,
        wrapHorizontal: !!cfg.wrap,
        showNavigator: true,
        navigatorPosition: "BOTTOM_RIGHT",
        showFullPageControl: true,
        showRotationControl: false,
        maxZoomPixelRatio: 4, // zoom to 400 % of full resolution
        minZoomImageRatio: 0.5,
        visibilityRatio: 0.5,
        animationTime: 0.8,
        springStiffness: 7,
        zoomPerScroll: 1.25,
        immediateRender: false,
        imageLoaderLimit: 8,
        timeout: 30000,
        gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
        keyboardNavEnabled: true,
        crossOriginPolicy: false,
      },
      extra || {}
    );
    return OpenSeadragon(opts);
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

  T.applyView = function (viewer, view, immediately) {
    const vp = viewer.viewport;
    if (!isFinite(view.x) || !isFinite(view.y) || !isFinite(view.z) || view.z <= 0) return;
    vp.zoomTo(vp.imageToViewportZoom(view.z), null, !!immediately);
    vp.panTo(vp.imageToViewportCoordinates(new OpenSeadragon.Point(view.x, view.y)), !!immediately);
  };

  T.parseHash = function (hash) {
    const h = (hash === undefined ? window.location.hash : hash).replace(/^#/, "");
    const p = new URLSearchParams(h);
    if (!p.has("x") || !p.has("y") || !p.has("z")) return null;
    const v = { x: parseFloat(p.get("x")), y: parseFloat(p.get("y")), z: parseFloat(p.get("z")) };
    return isFinite(v.x) && isFinite(v.y) && isFinite(v.z) && v.z > 0 ? v : null;
  };

  T.formatHash = function (v) {
    return "#x=" + v.x + "&y=" + v.y + "&z=" + v.z;
  };
})();
