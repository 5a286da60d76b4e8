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
    // A panorama fills the frame (pan along it) instead of a thin strip on a tall screen.
    homeFillsViewer: true,
    visibilityRatio: 1,
    constrainDuringPan: true,
    gestureSettingsTouch: { pinchRotate: false },
  });
})();
