/* Terapan embed page: a minimal OpenSeadragon viewer of one panorama. */
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("embed-config").textContent);
  window.terapanEmbed = OpenSeadragon({
    id: "embed-osd",
    prefixUrl: cfg.osdImages,
    tileSources: cfg.iiif || cfg.dzi,
    wrapHorizontal: !!cfg.wrap,
    showNavigator: false,
    showRotationControl: false,
    showFullPageControl: false,
    visibilityRatio: 0.5,
    gestureSettingsTouch: { pinchRotate: false },
  });
})();
